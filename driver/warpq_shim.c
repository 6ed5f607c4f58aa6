// SPDX-License-Identifier: GPL-2.0
/*
 * warpq C shim: only what Rust cannot reach in 6.12.
 *
 * - struct pci_driver / struct pci_device_id and the pci_register_driver()
 *   macro: bindgen does not see linux/pci.h in 6.12's kernel crate;
 * - static inline helpers (pci_name, dma_set_mask_and_coherent, ...);
 * - IOMMU queries (linux/iommu.h is not in the bindings either).
 *
 * Every function here is a one-liner around the kernel API it names, so that
 * the logic stays in Rust. Rust calls these through driver/shim.rs.
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/iommu.h>
#include <linux/dma-mapping.h>

#include "warpq_shim.h"

/* QEMU's educational PCI device: the stand-in for a non-SVA accelerator. */
static const struct pci_device_id warpq_pci_ids[] = {
	{ PCI_DEVICE(0x1234, 0x11e8) },
	{ }
};
MODULE_DEVICE_TABLE(pci, warpq_pci_ids);

static int warpq_shim_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	return warpq_rs_probe(pdev);
}

static void warpq_shim_remove(struct pci_dev *pdev)
{
	warpq_rs_remove(pdev);
}

static struct pci_driver warpq_pci_driver = {
	.name = "warpq",
	.id_table = warpq_pci_ids,
	.probe = warpq_shim_probe,
	.remove = warpq_shim_remove,
};

int warpq_pci_register_driver(void)
{
	return pci_register_driver(&warpq_pci_driver);
}

void warpq_pci_unregister_driver(void)
{
	pci_unregister_driver(&warpq_pci_driver);
}

struct device *warpq_pci_to_dev(struct pci_dev *pdev)
{
	return &pdev->dev;
}

const char *warpq_pci_name(struct pci_dev *pdev)
{
	return pci_name(pdev);
}

void warpq_pci_ids_of(struct pci_dev *pdev, u16 *vendor, u16 *device, u8 *revision)
{
	*vendor = pdev->vendor;
	*device = pdev->device;
	*revision = pdev->revision;
}

int warpq_pci_enable(struct pci_dev *pdev)
{
	int ret = pci_enable_device(pdev);

	if (ret)
		return ret;
	pci_set_master(pdev);
	return 0;
}

void warpq_pci_disable(struct pci_dev *pdev)
{
	pci_clear_master(pdev);
	pci_disable_device(pdev);
}

void warpq_pci_set_drvdata(struct pci_dev *pdev, void *data)
{
	pci_set_drvdata(pdev, data);
}

void *warpq_pci_get_drvdata(struct pci_dev *pdev)
{
	return pci_get_drvdata(pdev);
}

int warpq_dma_set_mask(struct device *dev, unsigned int bits)
{
	return dma_set_mask_and_coherent(dev, DMA_BIT_MASK(bits));
}

/*
 * What the device's DMA goes through: the IOMMU group (or -1 without one)
 * and the kind of domain the DMA API put it in.
 */
int warpq_iommu_describe(struct device *dev, int *group_id)
{
	struct iommu_group *group = iommu_group_get(dev);
	struct iommu_domain *domain;

	*group_id = -1;
	if (!group)
		return WARPQ_DMA_DIRECT;
	*group_id = iommu_group_id(group);
	iommu_group_put(group);

	domain = iommu_get_domain_for_dev(dev);
	if (!domain)
		return WARPQ_DMA_DIRECT;
	switch (domain->type) {
	case IOMMU_DOMAIN_DMA:
		return WARPQ_DMA_IOMMU_STRICT;
	case IOMMU_DOMAIN_DMA_FQ:
		return WARPQ_DMA_IOMMU_LAZY;
	case IOMMU_DOMAIN_IDENTITY:
		return WARPQ_DMA_IOMMU_IDENTITY;
	default:
		return WARPQ_DMA_IOMMU_OTHER;
	}
}
