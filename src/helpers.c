// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for the static inline functions and macros rvb2's Rust code needs; see
 * include/rvb2_helpers.h.
 */
#include <linux/compat.h>
#include <linux/dma-fence.h>
#include <linux/dma-fence-array.h>
#include <linux/dma-fence-unwrap.h>
#include <linux/dma-mapping.h>
#include <linux/dma-resv.h>
#include <linux/error-injection.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/percpu.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/sync_file.h>
#include <linux/vmalloc.h>

#include "rvb2_helpers.h"

void *rvb2___vmalloc(unsigned long size, gfp_t gfp_mask)
{
	return __vmalloc(size, gfp_mask);
}

void rvb2_spin_lock_init(spinlock_t *lock, const char *name, struct lock_class_key *key)
{
#ifdef CONFIG_DEBUG_SPINLOCK
	__raw_spin_lock_init(spinlock_check(lock), name, key, LD_WAIT_CONFIG);
#else
	spin_lock_init(lock);
#endif
}

#ifdef CONFIG_PREEMPT_RT
#error "rvb2's IrqSpinLock needs a spinning spinlock_t (not PREEMPT_RT)"
#endif

/*
 * IrqSpinLock (src/sync.rs): a spinlock taken with local interrupts disabled, whose unlocks
 * may come in any order. Instead of each holder keeping the flags spin_lock_irqsave() saved
 * (which restores the wrong state when two holders unlock out of order), this CPU counts the
 * locks it holds: the first disables interrupts and saves their state, the last unlock
 * restores it. Interrupts are disabled while the count is not zero, so it is only ever
 * changed by this CPU's current context.
 */
static DEFINE_PER_CPU(unsigned int, rvb2_irq_lock_count);
static DEFINE_PER_CPU(unsigned long, rvb2_irq_lock_flags);

static void rvb2_irq_lock_enter(unsigned long flags)
{
	if (this_cpu_inc_return(rvb2_irq_lock_count) == 1)
		this_cpu_write(rvb2_irq_lock_flags, flags);
}

void rvb2_irq_spin_lock(spinlock_t *lock)
{
	unsigned long flags;

	local_irq_save(flags);
	rvb2_irq_lock_enter(flags);
	spin_lock(lock);
}

bool rvb2_irq_spin_trylock(spinlock_t *lock)
{
	unsigned long flags;

	local_irq_save(flags);
	if (!spin_trylock(lock)) {
		local_irq_restore(flags);
		return false;
	}
	rvb2_irq_lock_enter(flags);
	return true;
}

void rvb2_irq_spin_unlock(spinlock_t *lock)
{
	spin_unlock(lock);
	if (WARN_ON_ONCE(this_cpu_read(rvb2_irq_lock_count) == 0))
		return;
	if (this_cpu_dec_return(rvb2_irq_lock_count) == 0)
		local_irq_restore(this_cpu_read(rvb2_irq_lock_flags));
}

bool rvb2_irqs_disabled(void)
{
	return irqs_disabled();
}

void rvb2_assert_spin_locked(spinlock_t *lock)
{
	lockdep_assert_held(lock);
}

unsigned long rvb2_vma_pgoff(struct vm_area_struct *vma)
{
	return vma->vm_pgoff;
}

bool rvb2_in_compat_syscall(void)
{
	return in_compat_syscall();
}

struct dma_fence *rvb2_dma_fence_get(struct dma_fence *fence)
{
	return dma_fence_get(fence);
}

void rvb2_dma_fence_put(struct dma_fence *fence)
{
	dma_fence_put(fence);
}

void rvb2_dma_fence_set_error(struct dma_fence *fence, int error)
{
	dma_fence_set_error(fence, error);
}

bool rvb2_dma_fence_is_signaled(struct dma_fence *fence)
{
	return dma_fence_is_signaled(fence);
}

/* Functions with CONFIG_LOCKDEP, static inline stubs without. */
bool rvb2_dma_fence_begin_signalling(void)
{
	return dma_fence_begin_signalling();
}

void rvb2_dma_fence_end_signalling(bool cookie)
{
	dma_fence_end_signalling(cookie);
}

/*
 * sync_file_create(), as a function of the module's own so that the fault-injection tests can
 * make it fail with fail_function (it then returns NULL, as on an allocation failure).
 */
noinline struct sync_file *rvb2_sync_file_create(struct dma_fence *fence)
{
	return sync_file_create(fence);
}
ALLOW_ERROR_INJECTION(rvb2_sync_file_create, NULL);

/* Without an acquire context: rvb2 locks one reservation object at a time. */
int rvb2_dma_resv_lock_interruptible(struct dma_resv *obj)
{
	return dma_resv_lock_interruptible(obj, NULL);
}

void rvb2_dma_resv_unlock(struct dma_resv *obj)
{
	dma_resv_unlock(obj);
}

void rvb2_sg_set_page(struct scatterlist *sg, struct page *page, unsigned int len,
		      unsigned int offset)
{
	sg_set_page(sg, page, len, offset);
}

struct scatterlist *rvb2_sg_next(struct scatterlist *sg)
{
	return sg_next(sg);
}

void rvb2_dma_unmap_sgtable(struct device *dev, struct sg_table *sgt, int dir)
{
	dma_unmap_sgtable(dev, sgt, dir, 0);
}

int rvb2_dma_coerce_mask_and_coherent(struct device *dev, unsigned int bits)
{
	return dma_coerce_mask_and_coherent(dev, DMA_BIT_MASK(bits));
}

void rvb2_dma_sync_sgtable_for_device(struct device *dev, struct sg_table *sgt, int dir)
{
	dma_sync_sgtable_for_device(dev, sgt, dir);
}

void rvb2_invalidate_kernel_vmap_range(void *vaddr, int size)
{
	invalidate_kernel_vmap_range(vaddr, size);
}

void rvb2_flush_kernel_vmap_range(void *vaddr, int size)
{
	flush_kernel_vmap_range(vaddr, size);
}

/* dma_fence_unwrap_merge() of two fences (NULL on ENOMEM). */
struct dma_fence *rvb2_dma_fence_unwrap_merge2(struct dma_fence *a, struct dma_fence *b)
{
	return dma_fence_unwrap_merge(a, b);
}

/*
 * dma_resv_get_singleton() without the fences that signalled already and those of the @nskip
 * fence contexts in @skip (the caller's own): one reference in *@fence to the only fence left,
 * or to a dma_fence_array of those left, or NULL if none is. 0, or -ENOMEM. Not for a
 * signalling path: it allocates.
 */
int rvb2_dma_resv_get_pending(struct dma_resv *obj, enum dma_resv_usage usage, const u64 *skip,
			      unsigned int nskip, struct dma_fence **fence)
{
	struct dma_fence_array *array;
	struct dma_fence **fences;
	unsigned int count, i, j, k;
	int r;

	*fence = NULL;
	r = dma_resv_get_fences(obj, usage, &count, &fences);
	if (r)
		return r;
	for (i = 0, j = 0; i < count; i++) {
		bool ours = false;

		for (k = 0; k < nskip; k++)
			ours |= fences[i]->context == skip[k];
		if (ours || dma_fence_is_signaled(fences[i]))
			dma_fence_put(fences[i]);
		else
			fences[j++] = fences[i];
	}
	if (j <= 1) {
		if (j == 1)
			*fence = fences[0];
		kfree(fences);
		return 0;
	}
	array = dma_fence_array_create(j, fences, dma_fence_context_alloc(1), 1);
	if (!array) {
		while (j--)
			dma_fence_put(fences[j]);
		kfree(fences);
		return -ENOMEM;
	}
	*fence = &array->base;
	return 0;
}
