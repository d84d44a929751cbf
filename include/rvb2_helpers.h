/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for what Rust cannot call directly: static inline functions and macros of the
 * kernel headers rvb2 uses. Each one only forwards to what it is named after (the
 * rust/helpers/ convention of the kernel tree), but rvb2_dma_resv_get_pending(), which is
 * dma_resv_get_singleton() with a filter.
 */
#ifndef RVB2_HELPERS_H
#define RVB2_HELPERS_H

#include <linux/types.h>
#include <linux/dma-resv.h>

struct lock_class_key;
struct dma_fence;
struct dma_resv;
struct vm_area_struct;
struct sync_file;
struct scatterlist;
struct sg_table;
struct page;
struct device;
typedef struct spinlock spinlock_t;

void *rvb2___vmalloc(unsigned long size, gfp_t gfp_mask);

void rvb2_spin_lock_init(spinlock_t *lock, const char *name, struct lock_class_key *key);
void rvb2_irq_spin_lock(spinlock_t *lock);
bool rvb2_irq_spin_trylock(spinlock_t *lock);
void rvb2_irq_spin_unlock(spinlock_t *lock);
bool rvb2_irqs_disabled(void);
void rvb2_assert_spin_locked(spinlock_t *lock);

struct dma_fence *rvb2_dma_fence_get(struct dma_fence *fence);
void rvb2_dma_fence_put(struct dma_fence *fence);
void rvb2_dma_fence_set_error(struct dma_fence *fence, int error);
bool rvb2_dma_fence_is_signaled(struct dma_fence *fence);
bool rvb2_dma_fence_begin_signalling(void);
void rvb2_dma_fence_end_signalling(bool cookie);
struct sync_file *rvb2_sync_file_create(struct dma_fence *fence);

int rvb2_dma_resv_lock_interruptible(struct dma_resv *obj);
void rvb2_dma_resv_unlock(struct dma_resv *obj);

unsigned long rvb2_vma_pgoff(struct vm_area_struct *vma);

bool rvb2_in_compat_syscall(void);

void rvb2_sg_set_page(struct scatterlist *sg, struct page *page, unsigned int len,
		      unsigned int offset);
struct scatterlist *rvb2_sg_next(struct scatterlist *sg);
void rvb2_dma_unmap_sgtable(struct device *dev, struct sg_table *sgt, int dir);
int rvb2_dma_coerce_mask_and_coherent(struct device *dev, unsigned int bits);
void rvb2_dma_sync_sgtable_for_device(struct device *dev, struct sg_table *sgt, int dir);
void rvb2_invalidate_kernel_vmap_range(void *vaddr, int size);
void rvb2_flush_kernel_vmap_range(void *vaddr, int size);

struct dma_fence *rvb2_dma_fence_unwrap_merge2(struct dma_fence *a, struct dma_fence *b);
int rvb2_dma_resv_get_pending(struct dma_resv *obj, enum dma_resv_usage usage, const u64 *skip,
			      unsigned int nskip, struct dma_fence **fence);

#endif /* RVB2_HELPERS_H */
