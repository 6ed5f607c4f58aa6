// SPDX-License-Identifier: GPL-2.0
/*
 * warpq from C, with nothing but driver/uapi/warpq.h: open the device, map
 * the queue, register a buffer, submit a batch of FILL and CRC32C commands
 * by writing entries and publishing the SQ tail (no system call per
 * command), then check every completion and every byte.
 *
 *   gcc -O2 -Wall -I driver/uapi -o warpq-c-submit user/examples/c/submit.c
 *   warpq-c-submit [/dev/warpq0]
 *
 * Exit status 0 when every command completed as expected.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "warpq.h"

#define PAGE		4096u
#define BUF_PAGES	16u
#define CHUNK		1024u				/* bytes each command covers */
#define COMMANDS	(BUF_PAGES * PAGE / CHUNK)	/* one FILL per chunk ... */
#define BATCH		(2 * COMMANDS)			/* ... then one CRC32C per chunk */

/* The ring's indices are shared with the kernel: user space writes sq_tail
 * and cq_head, the kernel the others. Loads of the kernel's indices acquire
 * (the entries they publish are visible after them); stores of ours release
 * (the entries written before them are visible to the engine first). */
static uint32_t load_acquire(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static void store_release(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

static int fail(const char *what)
{
	fprintf(stderr, "warpq-c-submit: %s: %s\n", what, strerror(errno));
	return 1;
}

/* CRC32C (Castagnoli, reflected), as the engine computes it. */
static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t len)
{
	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78u & -(crc & 1));
	}
	return ~crc;
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "/dev/warpq0";
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return fail(path);

	struct warpq_info info = { .size = sizeof(info) };
	if (ioctl(fd, WARPQ_IOC_INFO, &info) < 0)
		return fail("WARPQ_IOC_INFO");
	if (info.version != WARPQ_UAPI_VERSION || !(info.capabilities & WARPQ_CAP_RING)) {
		fprintf(stderr, "warpq-c-submit: driver speaks version %u without a ring\n", info.version);
		return 1;
	}

	/* The queue: header page, submission and completion entries. */
	uint8_t *ring = mmap(NULL, WARPQ_RING_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (ring == MAP_FAILED)
		return fail("mmap of the ring");
	struct warpq_ring_header *hdr = (struct warpq_ring_header *)ring;
	struct warpq_sqe *sq = (struct warpq_sqe *)(ring + hdr->sq_offset);
	struct warpq_cqe *cq = (struct warpq_cqe *)(ring + hdr->cq_offset);
	if (hdr->magic != WARPQ_RING_MAGIC) {
		fprintf(stderr, "warpq-c-submit: bad ring magic %#x\n", hdr->magic);
		return 1;
	}

	/* The buffer the device may read and write. */
	size_t len = BUF_PAGES * PAGE;
	uint8_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return fail("mmap of the buffer");
	memset(buf, 0, len);
	struct warpq_register reg = {
		.size = sizeof(reg),
		.access = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE,
		.addr = (uintptr_t)buf,
		.len = len,
	};
	if (ioctl(fd, WARPQ_IOC_REGISTER, &reg) < 0)
		return fail("WARPQ_IOC_REGISTER");

	/* One batch: a FILL of each chunk with its own byte, then a CRC32C of
	 * each chunk. The engine runs entries in order, so every CRC sees its
	 * chunk filled. */
	uint32_t tail = hdr->sq_tail;
	for (uint32_t i = 0; i < BATCH; i++) {
		uint32_t chunk = i % COMMANDS;
		struct warpq_sqe *e = &sq[(tail + i) & (hdr->sq_entries - 1)];
		memset(e, 0, sizeof(*e));
		e->opcode = i < COMMANDS ? WARPQ_OP_FILL : WARPQ_OP_CRC32C;
		e->user_data = i;
		e->len = CHUNK;
		if (i < COMMANDS) {
			e->dst = (uintptr_t)(buf + chunk * CHUNK);
			e->value = 0x40 + chunk;
		} else {
			e->src = (uintptr_t)(buf + chunk * CHUNK);
			e->value = 0;	/* CRC seed */
		}
	}
	store_release(&hdr->sq_tail, tail + BATCH);
	/* A sleeping engine needs one system call per batch, never per command
	 * (the flag is re-read after the tail store: a full barrier orders them). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (load_acquire(&hdr->flags) & WARPQ_RING_NEED_WAKEUP) {
		struct warpq_wake wake = { .size = sizeof(wake) };
		if (ioctl(fd, WARPQ_IOC_WAKE, &wake) < 0)
			return fail("WARPQ_IOC_WAKE");
	}

	/* Reap the completions, sleeping in WAIT only when none is ready. */
	uint8_t expect[CHUNK];
	uint32_t head = hdr->cq_head, seen = 0, bad = 0;
	while (seen < BATCH) {
		if (load_acquire(&hdr->cq_tail) == head) {
			struct warpq_wait wait = { .size = sizeof(wait), .min_ready = 1, .timeout_ns = 5000000000ll };
			if (ioctl(fd, WARPQ_IOC_WAIT, &wait) < 0)
				return fail("WARPQ_IOC_WAIT");
			if (wait.ready == 0) {
				fprintf(stderr, "warpq-c-submit: no completion in 5 s (%u of %u)\n", seen, BATCH);
				return 1;
			}
			continue;
		}
		const struct warpq_cqe *c = &cq[head & (hdr->cq_entries - 1)];
		uint32_t i = (uint32_t)c->user_data, chunk = i % COMMANDS;
		if (c->status != WARPQ_STATUS_OK) {
			fprintf(stderr, "command %u completed with status %u\n", i, c->status);
			bad++;
		} else if (i >= COMMANDS) {
			memset(expect, 0x40 + chunk, CHUNK);
			if (c->result != crc32c(0, expect, CHUNK)) {
				fprintf(stderr, "CRC of chunk %u: device %#llx\n", chunk, (unsigned long long)c->result);
				bad++;
			}
		}
		store_release(&hdr->cq_head, ++head);
		seen++;
	}
	for (uint32_t chunk = 0; chunk < COMMANDS; chunk++)
		for (uint32_t b = 0; b < CHUNK; b++)
			if (buf[chunk * CHUNK + b] != 0x40 + chunk) {
				fprintf(stderr, "byte %u of chunk %u is %#x\n", b, chunk, buf[chunk * CHUNK + b]);
				bad++;
				break;
			}

	struct warpq_unregister unreg = { .size = sizeof(unreg), .handle = reg.handle };
	if (ioctl(fd, WARPQ_IOC_UNREGISTER, &unreg) < 0)
		return fail("WARPQ_IOC_UNREGISTER");
	printf("warpq-c-submit: %u commands in one batch, %u wrong (%u FILL, %u CRC32C verified)\n",
	       BATCH, bad, COMMANDS, COMMANDS);
	return bad ? 1 : 0;
}
