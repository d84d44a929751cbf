/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause) */
/*
 * rvb2: explicit synchronization (fences) for V4L2 buffer queues.
 *
 * Include after <linux/videodev2.h>. The fence fd travels in struct v4l2_buffer.reserved2,
 * read as a signed 32-bit value (use the accessors below).
 *
 * VIDIOC_QBUF:
 *  - V4L2_BUF_FLAG_IN_FENCE: fence_fd is a sync_file fd; the buffer reaches the driver only
 *    once its fence signalled, and buffers queued after it wait too (QBUF order is kept). An
 *    in-fence that signals with an error keeps the buffer from the driver: it is returned by
 *    VIDIOC_DQBUF, in order, with V4L2_BUF_FLAG_ERROR. Anything but a sync_file fd is EINVAL.
 *    An in-fence that is, or contains, an unsignalled out-fence of the same queue is EDEADLK
 *    (nothing changes, no fd is installed).
 *  - Without V4L2_BUF_FLAG_IN_FENCE, fence_fd must be 0 or -1 (EINVAL otherwise).
 *  - V4L2_BUF_FLAG_OUT_FENCE: on success fence_fd is a new O_CLOEXEC sync_file fd that
 *    signals when this buffer is done (status 1), or with an error (negative status, see
 *    SYNC_IOC_FILE_INFO) if it fails (-EIO), is cancelled (-ECANCELED: STREAMOFF,
 *    REQBUFS(0), close) or reaches its deadline (-ETIMEDOUT, below). Both flags may be set on
 *    one buffer. A failing QBUF installs no fd and leaves no fence.
 *  - The bound: a buffer queued with either flag that has not completed fence_timeout_ms
 *    (module parameter, /sys/module/<module>/parameters/fence_timeout_ms, default 5000) after
 *    its QBUF fails with V4L2_BUF_FLAG_ERROR, together with every buffer queued before it
 *    that has not completed; their out-fences signal -ETIMEDOUT, in QBUF order. So every
 *    out-fence signals within the bound, whatever userspace does.
 *  - Without V4L2_BUF_FLAG_OUT_FENCE, fence_fd is returned as -1 if IN_FENCE was set, else 0.
 * VIDIOC_DQBUF, VIDIOC_QUERYBUF, VIDIOC_PREPARE_BUF never return an fd: fence_fd is -1 for a
 * buffer last queued with a fence flag, else 0. VIDIOC_QUERYBUF reports IN_FENCE while the
 * buffer waits for its in-fence and OUT_FENCE while its out-fence has not signalled.
 * VIDIOC_PREPARE_BUF takes no fence flag (EINVAL).
 *
 * Support is reported by V4L2_BUF_CAP_SUPPORTS_FENCES in the capabilities of VIDIOC_REQBUFS
 * and VIDIOC_CREATE_BUFS (a kernel without it echoes unknown flags, so test the capability).
 */
#ifndef _UAPI_LINUX_RVB2_FENCES_H
#define _UAPI_LINUX_RVB2_FENCES_H

#include <linux/types.h>
#include <linux/videodev2.h>

#define V4L2_BUF_FLAG_IN_FENCE		0x00200000
#define V4L2_BUF_FLAG_OUT_FENCE		0x00400000

/* Bits 9 to 14 are left to mainline and its proposals (1 << 9: RESTRICTED_MEM). */
#define V4L2_BUF_CAP_SUPPORTS_FENCES	(1 << 15)

/* The fence fd of a struct v4l2_buffer. */
static inline __s32 v4l2_buffer_fence_fd(const struct v4l2_buffer *b)
{
	return (__s32)b->reserved2;
}

static inline void v4l2_buffer_set_fence_fd(struct v4l2_buffer *b, __s32 fd)
{
	b->reserved2 = (__u32)fd;
}

#endif /* _UAPI_LINUX_RVB2_FENCES_H */
