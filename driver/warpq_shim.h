/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C shim's interface, mirrored by hand in driver/shim.rs (bindgen does
 * not run on out-of-tree modules). Keep the two in step.
 */
#ifndef WARPQ_SHIM_H
#define WARPQ_SHIM_H

#include <linux/types.h>

struct pci_dev;
struct device;

/* How the device's DMA is translated (warpq_iommu_describe). */
enum warpq_dma_kind {
	WARPQ_DMA_DIRECT = 0,		/* no IOMMU: dma-direct */
	WARPQ_DMA_IOMMU_STRICT = 1,	/* dma-iommu, IOTLB flushed on unmap */
	WARPQ_DMA_IOMMU_LAZY = 2,	/* dma-iommu, flush queue (deferred) */
	WARPQ_DMA_IOMMU_IDENTITY = 3,	/* IOMMU in pass-through */
	WARPQ_DMA_IOMMU_OTHER = 4,
};

/* Implemented in Rust (warpq_main.rs). */
int warpq_rs_probe(struct pci_dev *pdev);
void warpq_rs_remove(struct pci_dev *pdev);

/* Implemented in warpq_shim.c. */
int warpq_pci_register_driver(void);
void warpq_pci_unregister_driver(void);
struct device *warpq_pci_to_dev(struct pci_dev *pdev);
const char *warpq_pci_name(struct pci_dev *pdev);
void warpq_pci_ids_of(struct pci_dev *pdev, u16 *vendor, u16 *device, u8 *revision);
int warpq_pci_enable(struct pci_dev *pdev);
void warpq_pci_disable(struct pci_dev *pdev);
void warpq_pci_set_drvdata(struct pci_dev *pdev, void *data);
void *warpq_pci_get_drvdata(struct pci_dev *pdev);
int warpq_dma_set_mask(struct device *dev, unsigned int bits);
int warpq_iommu_describe(struct device *dev, int *group_id);

#endif /* WARPQ_SHIM_H */
