// SPDX-License-Identifier: GPL-2.0
/*
 * fence-capture: stream from a V4L2 capture device with rvb2's explicit synchronization.
 *
 * Every buffer is queued with an in-fence from a sw_sync timeline, which gates when the
 * driver may fill it, and asks for an out-fence, which signals when the buffer is done. The
 * program waits for frames by polling the out-fence (a sync_file), not by DQBUF, the way a
 * display or encoder would consume them.
 *
 *   fence-capture [/dev/videoN [frames]]
 *
 * Build: cc -O2 -Wall -I include/uapi -o fence-capture samples/fence-capture.c
 * Needs root (sw_sync lives in debugfs, CONFIG_SW_SYNC).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/sync_file.h>
#include <linux/videodev2.h>
#include <linux/rvb2-fences.h>

/* sw_sync has no installed UAPI header (drivers/dma-buf/sw_sync.c). */
struct sw_sync_create_fence_data {
	__u32 value;
	char name[32];
	__s32 fence;
};
#define SW_SYNC_IOC_CREATE_FENCE _IOWR('W', 0, struct sw_sync_create_fence_data)
#define SW_SYNC_IOC_INC _IOW('W', 1, __u32)

#define NBUFS 4

static int xioctl(int fd, unsigned long req, void *arg)
{
	int r;

	do
		r = ioctl(fd, req, arg);
	while (r < 0 && errno == EINTR);
	return r;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* A sync_file that signals when the timeline reaches @value. */
static int gate_fence(int timeline, unsigned int value)
{
	struct sw_sync_create_fence_data d = { .value = value };

	snprintf(d.name, sizeof(d.name), "gate-%u", value);
	if (xioctl(timeline, SW_SYNC_IOC_CREATE_FENCE, &d))
		die("SW_SYNC_IOC_CREATE_FENCE");
	return d.fence;
}

/* Queues buffer @index behind an in-fence; returns its out-fence fd. */
static int queue(int dev, unsigned int index, int in_fence)
{
	struct v4l2_buffer b = {
		.index = index,
		.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
		.memory = V4L2_MEMORY_MMAP,
		.flags = V4L2_BUF_FLAG_IN_FENCE | V4L2_BUF_FLAG_OUT_FENCE,
	};

	v4l2_buffer_set_fence_fd(&b, in_fence);
	if (xioctl(dev, VIDIOC_QBUF, &b))
		die("VIDIOC_QBUF");
	close(in_fence);	/* the queue holds its own reference */
	return v4l2_buffer_fence_fd(&b);
}

/* The status of a sync_file: 1 signalled, 0 pending, < 0 error. */
static int fence_status(int fd)
{
	struct sync_file_info info = { 0 };

	if (xioctl(fd, SYNC_IOC_FILE_INFO, &info))
		die("SYNC_IOC_FILE_INFO");
	return info.status;
}

int main(int argc, char **argv)
{
	const char *node = argc > 1 ? argv[1] : "/dev/video0";
	unsigned int frames = argc > 2 ? atoi(argv[2]) : 16;
	struct v4l2_requestbuffers req = {
		.count = NBUFS,
		.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
		.memory = V4L2_MEMORY_MMAP,
	};
	int out_fence[NBUFS];
	unsigned int gate_of[NBUFS];
	unsigned int gate, i, done = 0, errors = 0;
	int dev, timeline;

	dev = open(node, O_RDWR | O_CLOEXEC);
	if (dev < 0)
		die(node);
	if (xioctl(dev, VIDIOC_REQBUFS, &req))
		die("VIDIOC_REQBUFS");
	if (!(req.capabilities & V4L2_BUF_CAP_SUPPORTS_FENCES)) {
		fprintf(stderr, "%s: no fence support\n", node);
		return 1;
	}
	for (i = 0; i < req.count && i < NBUFS; i++) {
		struct v4l2_buffer b = {
			.index = i,
			.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
			.memory = V4L2_MEMORY_MMAP,
		};

		if (xioctl(dev, VIDIOC_QUERYBUF, &b))
			die("VIDIOC_QUERYBUF");
		if (mmap(NULL, b.length, PROT_READ, MAP_SHARED, dev, b.m.offset) == MAP_FAILED)
			die("mmap");
	}

	timeline = open("/sys/kernel/debug/sync/sw_sync", O_RDWR | O_CLOEXEC);
	if (timeline < 0)
		die("/sys/kernel/debug/sync/sw_sync");

	/*
	 * The k-th QBUF may only be filled once the timeline reaches k + 1. Two gates open at
	 * first: the driver starts streaming when two buffers are ready. Each frame then opens
	 * one more.
	 */
	for (i = 0; i < NBUFS; i++) {
		gate_of[i] = i + 1;
		out_fence[i] = queue(dev, i, gate_fence(timeline, gate_of[i]));
	}
	if (xioctl(dev, VIDIOC_STREAMON, &req.type))
		die("VIDIOC_STREAMON");
	gate = 2;
	if (xioctl(timeline, SW_SYNC_IOC_INC, &gate))
		die("SW_SYNC_IOC_INC");

	while (done < frames) {
		unsigned int index = done % NBUFS;
		struct pollfd p = { .fd = out_fence[index], .events = POLLIN };
		struct v4l2_buffer b = {
			.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
			.memory = V4L2_MEMORY_MMAP,
		};
		__u32 one = 1;
		int status;

		/* Wait for the out-fence of the oldest buffer. */
		if (poll(&p, 1, 5000) != 1) {
			fprintf(stderr, "frame %u: out-fence did not signal\n", done);
			return 1;
		}
		status = fence_status(out_fence[index]);
		close(out_fence[index]);

		/* The buffer is done: DQBUF does not wait. */
		if (xioctl(dev, VIDIOC_DQBUF, &b))
			die("VIDIOC_DQBUF");
		if (b.index != index || status < 0 || (b.flags & V4L2_BUF_FLAG_ERROR))
			errors++;
		printf("frame %u: buffer %u seq %u bytes %u out-fence status %d\n",
		       done, b.index, b.sequence, b.bytesused, status);
		done++;

		/* Requeue it as QBUF number done + NBUFS - 1, and open one more gate. */
		gate_of[index] = done + NBUFS;
		out_fence[index] = queue(dev, b.index, gate_fence(timeline, gate_of[index]));
		if (xioctl(timeline, SW_SYNC_IOC_INC, &one))
			die("SW_SYNC_IOC_INC");
		gate++;
	}

	if (xioctl(dev, VIDIOC_STREAMOFF, &req.type))
		die("VIDIOC_STREAMOFF");
	/*
	 * Every out-fence has signalled now. STREAMOFF cancelled the buffers still waiting for
	 * their gate: their out-fences carry an error. A buffer whose gate was open may have been
	 * filled before STREAMOFF (a frame period passed since the last DQBUF) or cancelled.
	 */
	for (i = 0; i < NBUFS; i++) {
		int status = fence_status(out_fence[i]);

		if (status == 0 || (gate_of[i] > gate && status > 0))
			errors++;
		close(out_fence[i]);
	}
	close(timeline);
	close(dev);
	printf("%u frames, %u errors\n", done, errors);
	return errors ? 1 : 0;
}
