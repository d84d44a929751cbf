/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for what Rust cannot call directly: static inline functions and macros of the
 * V4L2, dma-fence and sync_file headers. Each one only forwards to the kernel function it is
 * named after (the rust/helpers/ convention of the kernel tree).
 */
#ifndef RVB2_HELPERS_H
#define RVB2_HELPERS_H

struct video_device;

const char *rvb2_video_device_node_name(struct video_device *vdev);

#endif /* RVB2_HELPERS_H */
