/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kernel headers rvb2 generates its own Rust bindings from (src/bindings.rs): the 7.2
 * kernel crate has no V4L2, dma-fence or sync_file abstractions. Only what the allowlists in
 * Kbuild name ends up in the generated file.
 */
#include <linux/dma-fence.h>
#include <linux/dma-fence-unwrap.h>
#include <linux/dma-buf.h>
#include <linux/dma-resv.h>
#include <linux/dma-mapping.h>
#include <linux/scatterlist.h>
#include <linux/sync_file.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <media/v4l2-device.h>
#include <media/v4l2-dev.h>
#include <media/v4l2-fh.h>
#include <media/v4l2-ioctl.h>
#include <media/v4l2-ctrls.h>
#include <media/v4l2-event.h>

#include "uapi/linux/rvb2-fences.h"
#include "rvb2_helpers.h"

/*
 * The allocation flags of MMAP buffer memory (src/mem/vmalloc.rs): charged to the caller's
 * memory cgroup, zeroed, failing rather than invoking the OOM killer, and quietly (userspace
 * asked for the size).
 */
const gfp_t RVB2_GFP_BUFFER = GFP_KERNEL_ACCOUNT | __GFP_ZERO | __GFP_RETRY_MAYFAIL | __GFP_NOWARN;
