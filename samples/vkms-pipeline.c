// SPDX-License-Identifier: GPL-2.0
/*
 * vkms-pipeline: capture to display with fences both ways, zero-copy.
 *
 * A V4L2 capture device with rvb2's fences (rvivid) fills buffers that a KMS display (vkms)
 * scans out, with no copy and no CPU wait between the two:
 *
 *  - every VIDIOC_QBUF asks for an out-fence (V4L2_BUF_FLAG_OUT_FENCE);
 *  - the atomic commit that shows the buffer takes that fence as the plane's IN_FENCE_FD, so
 *    the display flips to the buffer once the frame is in it, and asks for the CRTC's
 *    OUT_FENCE_PTR, which signals when that flip happened, i.e. when the buffer shown before
 *    is no longer scanned out;
 *  - that fence is the in-fence (V4L2_BUF_FLAG_IN_FENCE) of the next VIDIOC_QBUF of the
 *    buffer it replaced: the camera never writes a buffer that is still on screen.
 *
 * Nothing waits for a frame: the commit for frame k is made as soon as the display took
 * frame k - 1 (KMS accepts one pending commit per CRTC), before frame k is captured. A
 * buffer is dequeued only to be queued again, once the display has taken the frame after it;
 * its frame is complete by then (the display waited for it), so VIDIOC_DQBUF never waits (the
 * video node is opened O_NONBLOCK and EAGAIN would be a bug). The queue is ordered, so the
 * k-th QBUF is the k-th frame: buffer k % N, and the frames are shown in that order.
 *
 *   vkms-pipeline [-d /dev/videoN] [-c /dev/dri/cardN] [-n frames] [-b buffers]
 *                 [-s WxH] [-r fps] [-m fenced|implicit|classic] [-M export|import] [-w] [-v]
 *                 [-f frame] [-q frame]
 *
 *  -m fenced    explicit fences both ways (the default)
 *  -m implicit  no IN_FENCE_FD: KMS waits for the write fence the capture driver put in the
 *               dma-buf's reservation object (implicit synchronization, as compositors do)
 *  -m classic   no fences: poll and VIDIOC_DQBUF a frame, commit it, wait for the flip, then
 *               queue the buffer it replaced again (the CPU waits at every step)
 *  -M export    rvivid's MMAP buffers, exported with VIDIOC_EXPBUF and imported into the
 *               display with DRM_IOCTL_PRIME_FD_TO_HANDLE (the default)
 *  -M import    the display's dumb buffers, exported with DRM_IOCTL_PRIME_HANDLE_TO_FD and
 *               queued as V4L2_MEMORY_DMABUF buffers (needs DMABUF support in the capture
 *               device)
 *  -w           proof by writeback: every commit also writes the composed frame back
 *               (vkms's writeback connector); each written-back frame must equal, byte for
 *               byte, the captured buffer it showed, and carry that buffer's frame counter
 *               (rvivid draws it); the program waits for the writeback fences, so use it to
 *               check, not to measure
 *  -v           one line per frame
 *  -f K         fault: at frame K, make rvivid fail the next buffer it completes (its
 *               "Fail Next Buffers" control); the failed frame's out-fence signals -EIO, but
 *               KMS does not look at fence errors and shows the buffer anyway, so the pipeline
 *               learns of it when it dequeues the buffer (V4L2_BUF_FLAG_ERROR), does not check
 *               that frame, counts it as failed and goes on
 *  -q K         quit: right after the commit of frame K (which waits for its capture), close
 *               the video device without STREAMOFF; every capture out-fence still held must
 *               have signalled (the close cancels them), and the pending flip must happen
 *
 * The format is V4L2_PIX_FMT_RGB24 (bytes R, G, B), which KMS calls DRM_FORMAT_BGR888.
 * The display runs a mode of the capture size at 60 Hz.
 *
 * At the end it prints a summary: frames shown, frames checked, errors, sequence gaps (frames
 * the capture dropped), mean and maximum capture-to-flip latency (the buffer's timestamp to
 * the flip event), CPU time per frame of this process, and exits 0 if there was no error.
 *
 * Build: cc -O2 -Wall -I include/uapi -idirafter <kernel>/include/uapi -D__user= \
 *        -o vkms-pipeline samples/vkms-pipeline.c
 * (the DRM UAPI headers of a kernel tree, <drm/drm.h> and friends, whose __user annotations
 * `make headers_install` would strip; installed kernel headers need neither option).
 * Needs root, vkms loaded (modprobe vkms; with its default enable_writeback=1 for -w).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <linux/sync_file.h>
#include <linux/videodev2.h>
#include <linux/rvb2-fences.h>
#include <drm/drm.h>
#include <drm/drm_fourcc.h>
#include <drm/drm_mode.h>

/* enum drm_plane_type, in the "type" property of planes (not in the UAPI headers). */
#define DRM_PLANE_TYPE_PRIMARY 1

#define MAX_BUFS 8
#define NUM_WB 2
#define REFRESH_HZ 60

enum sync_mode { FENCED, IMPLICIT, CLASSIC };
enum mem_mode { EXPORT, IMPORT };

struct frame_buf {
	int dmabuf;		/* the dma-buf fd shared by both devices */
	__u32 handle;		/* its GEM handle on the display */
	__u32 fb_id;
	void *map;		/* CPU mapping, to check frames */
	size_t size;
	int cap_fence;		/* out-fence of its last QBUF, until a commit takes it */
};

struct wb_buf {
	__u32 handle, fb_id, pitch;
	void *map;
	size_t size;
};

struct props {
	__u32 plane_fb, plane_crtc, plane_in_fence, plane_src[4], plane_dst[4];
	__u32 crtc_mode, crtc_active, crtc_out_fence;
	__u32 conn_crtc;
	__u32 wb_crtc, wb_fb, wb_out_fence;
};

static struct {
	int video, drm;
	enum sync_mode sync;
	enum mem_mode mem;
	unsigned int width, height, pitch, nbufs, fps, frames;
	int writeback, verbose;
	unsigned int fail_at, quit_at;
	__u32 crtc, plane, conn, wb_conn, mode_blob;
	struct props p;
	struct frame_buf buf[MAX_BUFS];
	struct wb_buf wb[NUM_WB];
	/* statistics */
	unsigned int shown, checked, errors, gaps, failed;
	double lat_sum_us, lat_max_us;
} g = {
	.width = 320, .height = 240, .nbufs = 3, .fps = 30, .frames = 300,
};

/* CPU time of this thread in the calls of each step (-v prints it per frame). */
enum step { ST_COMMIT, ST_FLIP, ST_QBUF, ST_DQBUF, ST_NUM };
static const char *const step_name[ST_NUM] = { "commit", "flip event", "QBUF", "DQBUF" };
static double step_cpu_us[ST_NUM];

static double cpu_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

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

static void fail(const char *fmt, const char *arg)
{
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	exit(1);
}

/* ---- DRM: finding the card, its objects and their properties ---- */

static int open_vkms(const char *path)
{
	char name[32], node[32];
	int i;

	for (i = 0; i < 16; i++) {
		struct drm_version v = { .name = name, .name_len = sizeof(name) - 1 };
		int fd;

		if (path)
			snprintf(node, sizeof(node), "%s", path);
		else
			snprintf(node, sizeof(node), "/dev/dri/card%d", i);
		fd = open(node, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			if (path)
				die(path);
			continue;
		}
		memset(name, 0, sizeof(name));
		if (!xioctl(fd, DRM_IOCTL_VERSION, &v) && !strcmp(name, "vkms"))
			return fd;
		close(fd);
		if (path)
			fail("%s is not vkms", path);
	}
	fail("no vkms card in /dev/dri (%s)", "modprobe vkms");
	return -1;
}

static void set_cap(__u64 cap)
{
	struct drm_set_client_cap c = { .capability = cap, .value = 1 };

	if (xioctl(g.drm, DRM_IOCTL_SET_CLIENT_CAP, &c))
		die("DRM_IOCTL_SET_CLIENT_CAP");
}

/* The id of property @name of object @id, or 0. Optionally its current value. */
static __u32 prop_id(__u32 id, __u32 type, const char *name, __u64 *value)
{
	struct drm_mode_obj_get_properties op = { .obj_id = id, .obj_type = type };
	__u32 ids[64], found = 0, i;
	__u64 values[64];

	if (xioctl(g.drm, DRM_IOCTL_MODE_OBJ_GETPROPERTIES, &op))
		die("DRM_IOCTL_MODE_OBJ_GETPROPERTIES");
	if (op.count_props > 64)
		fail("too many properties on %s", name);
	op.props_ptr = (__u64)(uintptr_t)ids;
	op.prop_values_ptr = (__u64)(uintptr_t)values;
	if (xioctl(g.drm, DRM_IOCTL_MODE_OBJ_GETPROPERTIES, &op))
		die("DRM_IOCTL_MODE_OBJ_GETPROPERTIES");
	for (i = 0; i < op.count_props && !found; i++) {
		struct drm_mode_get_property gp = { .prop_id = ids[i] };

		if (xioctl(g.drm, DRM_IOCTL_MODE_GETPROPERTY, &gp))
			die("DRM_IOCTL_MODE_GETPROPERTY");
		if (!strcmp(gp.name, name)) {
			found = ids[i];
			if (value)
				*value = values[i];
		}
	}
	return found;
}

static __u32 need_prop(__u32 id, __u32 type, const char *name)
{
	__u32 p = prop_id(id, type, name, NULL);

	if (!p)
		fail("no property %s", name);
	return p;
}

/* The first CRTC, its primary plane, the virtual connector and the writeback connector. */
static void find_objects(void)
{
	struct drm_mode_card_res res = { 0 };
	struct drm_mode_get_plane_res pres = { 0 };
	__u32 crtcs[8], conns[8], planes[16], i;

	if (xioctl(g.drm, DRM_IOCTL_MODE_GETRESOURCES, &res))
		die("DRM_IOCTL_MODE_GETRESOURCES");
	if (!res.count_crtcs || res.count_crtcs > 8 || res.count_connectors > 8)
		fail("unexpected resources on %s", "vkms");
	res.crtc_id_ptr = (__u64)(uintptr_t)crtcs;
	res.connector_id_ptr = (__u64)(uintptr_t)conns;
	res.count_fbs = res.count_encoders = 0;
	if (xioctl(g.drm, DRM_IOCTL_MODE_GETRESOURCES, &res))
		die("DRM_IOCTL_MODE_GETRESOURCES");
	g.crtc = crtcs[0];
	for (i = 0; i < res.count_connectors; i++) {
		struct drm_mode_get_connector c = { .connector_id = conns[i] };

		if (xioctl(g.drm, DRM_IOCTL_MODE_GETCONNECTOR, &c))
			die("DRM_IOCTL_MODE_GETCONNECTOR");
		if (c.connector_type == DRM_MODE_CONNECTOR_WRITEBACK)
			g.wb_conn = conns[i];
		else if (!g.conn)
			g.conn = conns[i];
	}
	if (!g.conn)
		fail("no connector on %s", "vkms");
	if (g.writeback && !g.wb_conn)
		fail("no writeback connector (%s)", "vkms enable_writeback=1");

	if (xioctl(g.drm, DRM_IOCTL_MODE_GETPLANERESOURCES, &pres))
		die("DRM_IOCTL_MODE_GETPLANERESOURCES");
	if (pres.count_planes > 16)
		fail("too many planes on %s", "vkms");
	pres.plane_id_ptr = (__u64)(uintptr_t)planes;
	if (xioctl(g.drm, DRM_IOCTL_MODE_GETPLANERESOURCES, &pres))
		die("DRM_IOCTL_MODE_GETPLANERESOURCES");
	for (i = 0; i < pres.count_planes && !g.plane; i++) {
		struct drm_mode_get_plane gp = { .plane_id = planes[i] };
		__u64 type = 0;

		if (xioctl(g.drm, DRM_IOCTL_MODE_GETPLANE, &gp))
			die("DRM_IOCTL_MODE_GETPLANE");
		/* possible_crtcs bit 0 is the first CRTC */
		if (!(gp.possible_crtcs & 1))
			continue;
		if (prop_id(planes[i], DRM_MODE_OBJECT_PLANE, "type", &type) &&
		    type == DRM_PLANE_TYPE_PRIMARY)
			g.plane = planes[i];
	}
	if (!g.plane)
		fail("no primary plane on %s", "vkms");

	g.p.plane_fb = need_prop(g.plane, DRM_MODE_OBJECT_PLANE, "FB_ID");
	g.p.plane_crtc = need_prop(g.plane, DRM_MODE_OBJECT_PLANE, "CRTC_ID");
	g.p.plane_in_fence = need_prop(g.plane, DRM_MODE_OBJECT_PLANE, "IN_FENCE_FD");
	g.p.plane_src[0] = need_prop(g.plane, DRM_MODE_OBJECT_PLANE, "SRC_X");
	g.p.plane_src[1] = need_prop(g.plane, DRM_MODE_OBJECT_PLANE, "SRC_Y");
	g.p.plane_src[2] = need_prop(g.plane, DRM_MODE_OBJECT_PLANE, "SRC_W");
	g.p.plane_src[3] = need_prop(g.plane, DRM_MODE_OBJECT_PLANE, "SRC_H");
	g.p.plane_dst[0] = need_prop(g.plane, DRM_MODE_OBJECT_PLANE, "CRTC_X");
	g.p.plane_dst[1] = need_prop(g.plane, DRM_MODE_OBJECT_PLANE, "CRTC_Y");
	g.p.plane_dst[2] = need_prop(g.plane, DRM_MODE_OBJECT_PLANE, "CRTC_W");
	g.p.plane_dst[3] = need_prop(g.plane, DRM_MODE_OBJECT_PLANE, "CRTC_H");
	g.p.crtc_mode = need_prop(g.crtc, DRM_MODE_OBJECT_CRTC, "MODE_ID");
	g.p.crtc_active = need_prop(g.crtc, DRM_MODE_OBJECT_CRTC, "ACTIVE");
	g.p.crtc_out_fence = need_prop(g.crtc, DRM_MODE_OBJECT_CRTC, "OUT_FENCE_PTR");
	g.p.conn_crtc = need_prop(g.conn, DRM_MODE_OBJECT_CONNECTOR, "CRTC_ID");
	if (g.writeback) {
		g.p.wb_crtc = need_prop(g.wb_conn, DRM_MODE_OBJECT_CONNECTOR, "CRTC_ID");
		g.p.wb_fb = need_prop(g.wb_conn, DRM_MODE_OBJECT_CONNECTOR, "WRITEBACK_FB_ID");
		g.p.wb_out_fence = need_prop(g.wb_conn, DRM_MODE_OBJECT_CONNECTOR,
					     "WRITEBACK_OUT_FENCE_PTR");
	}
}

/* A mode of the capture size at REFRESH_HZ, as a property blob. */
static void create_mode(void)
{
	struct drm_mode_modeinfo m = { 0 };
	struct drm_mode_create_blob blob = { 0 };

	m.hdisplay = g.width;
	m.hsync_start = g.width + 16;
	m.hsync_end = g.width + 32;
	m.htotal = g.width + 80;
	m.vdisplay = g.height;
	m.vsync_start = g.height + 3;
	m.vsync_end = g.height + 6;
	m.vtotal = g.height + 10;
	m.clock = (__u32)((__u64)m.htotal * m.vtotal * REFRESH_HZ / 1000);
	m.vrefresh = REFRESH_HZ;
	m.type = DRM_MODE_TYPE_USERDEF;
	snprintf(m.name, sizeof(m.name), "%ux%u", g.width, g.height);
	blob.data = (__u64)(uintptr_t)&m;
	blob.length = sizeof(m);
	if (xioctl(g.drm, DRM_IOCTL_MODE_CREATEPROPBLOB, &blob))
		die("DRM_IOCTL_MODE_CREATEPROPBLOB");
	g.mode_blob = blob.blob_id;
}

static __u32 add_fb(__u32 handle, __u32 pitch, __u32 format)
{
	struct drm_mode_fb_cmd2 f = {
		.width = g.width,
		.height = g.height,
		.pixel_format = format,
		.handles = { handle },
		.pitches = { pitch },
	};

	if (xioctl(g.drm, DRM_IOCTL_MODE_ADDFB2, &f))
		die("DRM_IOCTL_MODE_ADDFB2");
	return f.fb_id;
}

/* A dumb buffer of @bpp bits per pixel, mapped. */
static void create_dumb(__u32 bpp, __u32 *handle, __u32 *pitch, void **map, size_t *size)
{
	struct drm_mode_create_dumb c = { .width = g.width, .height = g.height, .bpp = bpp };
	struct drm_mode_map_dumb m = { 0 };

	if (xioctl(g.drm, DRM_IOCTL_MODE_CREATE_DUMB, &c))
		die("DRM_IOCTL_MODE_CREATE_DUMB");
	m.handle = c.handle;
	if (xioctl(g.drm, DRM_IOCTL_MODE_MAP_DUMB, &m))
		die("DRM_IOCTL_MODE_MAP_DUMB");
	*map = mmap(NULL, c.size, PROT_READ | PROT_WRITE, MAP_SHARED, g.drm, m.offset);
	if (*map == MAP_FAILED)
		die("mmap of a dumb buffer");
	*handle = c.handle;
	*pitch = c.pitch;
	*size = c.size;
}

/* ---- the atomic commit ---- */

struct commit {
	__u32 objs[4], counts[4], props[24];
	__u64 values[24];
	unsigned int nobjs, nprops;
};

static void add(struct commit *c, __u32 obj, __u32 prop, __u64 value)
{
	if (!c->nobjs || c->objs[c->nobjs - 1] != obj) {
		c->objs[c->nobjs] = obj;
		c->counts[c->nobjs++] = 0;
	}
	c->counts[c->nobjs - 1]++;
	c->props[c->nprops] = prop;
	c->values[c->nprops++] = value;
}

/*
 * Shows @b: its plane waits for @in_fence (-1: none), the CRTC's out-fence (the release fence
 * of the buffer shown before) goes to *@out_fence, and with -w the composed frame is written
 * back into @wb, whose fence goes to *@wb_fence. A flip event carries @k.
 */
static void commit(struct frame_buf *b, int in_fence, int *out_fence, struct wb_buf *wb,
		   int *wb_fence, unsigned int k, int modeset)
{
	struct commit c = { 0 };
	struct drm_mode_atomic a = { 0 };
	double t;

	add(&c, g.plane, g.p.plane_fb, b->fb_id);
	add(&c, g.plane, g.p.plane_in_fence, (__u64)(__s64)in_fence);
	if (modeset) {
		const __u64 src[4] = { 0, 0, (__u64)g.width << 16, (__u64)g.height << 16 };
		const __u64 dst[4] = { 0, 0, g.width, g.height };
		int i;

		add(&c, g.plane, g.p.plane_crtc, g.crtc);
		for (i = 0; i < 4; i++) {
			add(&c, g.plane, g.p.plane_src[i], src[i]);
			add(&c, g.plane, g.p.plane_dst[i], dst[i]);
		}
	}
	add(&c, g.crtc, g.p.crtc_out_fence, (__u64)(uintptr_t)out_fence);
	if (modeset) {
		add(&c, g.crtc, g.p.crtc_mode, g.mode_blob);
		add(&c, g.crtc, g.p.crtc_active, 1);
		add(&c, g.conn, g.p.conn_crtc, g.crtc);
	}
	if (wb) {
		if (modeset)
			add(&c, g.wb_conn, g.p.wb_crtc, g.crtc);
		add(&c, g.wb_conn, g.p.wb_fb, wb->fb_id);
		add(&c, g.wb_conn, g.p.wb_out_fence, (__u64)(uintptr_t)wb_fence);
	}
	a.flags = DRM_MODE_ATOMIC_NONBLOCK | DRM_MODE_PAGE_FLIP_EVENT |
		  (modeset ? DRM_MODE_ATOMIC_ALLOW_MODESET : 0);
	a.count_objs = c.nobjs;
	a.objs_ptr = (__u64)(uintptr_t)c.objs;
	a.count_props_ptr = (__u64)(uintptr_t)c.counts;
	a.props_ptr = (__u64)(uintptr_t)c.props;
	a.prop_values_ptr = (__u64)(uintptr_t)c.values;
	a.user_data = k;
	*out_fence = -1;
	if (wb_fence)
		*wb_fence = -1;
	t = cpu_now_us();
	if (xioctl(g.drm, DRM_IOCTL_MODE_ATOMIC, &a))
		die("DRM_IOCTL_MODE_ATOMIC");
	step_cpu_us[ST_COMMIT] += cpu_now_us() - t;
}

/* Waits for the flip event of commit @k; returns its time (CLOCK_MONOTONIC, us). */
static double wait_flip(unsigned int k)
{
	struct drm_event_vblank ev;
	ssize_t n;

	double t = cpu_now_us();

	n = read(g.drm, &ev, sizeof(ev));
	step_cpu_us[ST_FLIP] += cpu_now_us() - t;
	if (n < 0)
		die("read of a DRM event");
	if (n != sizeof(ev) || ev.base.type != DRM_EVENT_FLIP_COMPLETE || ev.user_data != k) {
		fprintf(stderr, "frame %u: unexpected DRM event (type %u, data %llu)\n", k,
			ev.base.type, (unsigned long long)ev.user_data);
		exit(1);
	}
	return ev.tv_sec * 1e6 + ev.tv_usec;
}

/* ---- V4L2 ---- */

/* Queues buffer @i, gated by @in_fence if >= 0; with @out, returns its out-fence. */
static int queue(unsigned int i, int in_fence, int out)
{
	struct v4l2_buffer b = {
		.index = i,
		.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
		.memory = g.mem == IMPORT ? V4L2_MEMORY_DMABUF : V4L2_MEMORY_MMAP,
	};
	double t;

	if (g.mem == IMPORT) {
		b.m.fd = g.buf[i].dmabuf;
		b.length = g.buf[i].size;
	}
	if (in_fence >= 0)
		b.flags |= V4L2_BUF_FLAG_IN_FENCE;
	if (out)
		b.flags |= V4L2_BUF_FLAG_OUT_FENCE;
	v4l2_buffer_set_fence_fd(&b, in_fence >= 0 ? in_fence : 0);
	t = cpu_now_us();
	if (xioctl(g.video, VIDIOC_QBUF, &b))
		die("VIDIOC_QBUF");
	step_cpu_us[ST_QBUF] += cpu_now_us() - t;
	return out ? v4l2_buffer_fence_fd(&b) : -1;
}

static int dequeue(struct v4l2_buffer *b)
{
	double t;
	int r;

	memset(b, 0, sizeof(*b));
	b->type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	b->memory = g.mem == IMPORT ? V4L2_MEMORY_DMABUF : V4L2_MEMORY_MMAP;
	t = cpu_now_us();
	r = xioctl(g.video, VIDIOC_DQBUF, b);
	step_cpu_us[ST_DQBUF] += cpu_now_us() - t;
	return r;
}

static void setup_video(void)
{
	struct v4l2_format f = { .type = V4L2_BUF_TYPE_VIDEO_CAPTURE };
	struct v4l2_streamparm parm = { .type = V4L2_BUF_TYPE_VIDEO_CAPTURE };
	struct v4l2_requestbuffers req = {
		.count = g.nbufs,
		.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
		.memory = g.mem == IMPORT ? V4L2_MEMORY_DMABUF : V4L2_MEMORY_MMAP,
	};
	unsigned int i;

	f.fmt.pix.width = g.width;
	f.fmt.pix.height = g.height;
	f.fmt.pix.pixelformat = V4L2_PIX_FMT_RGB24;
	f.fmt.pix.field = V4L2_FIELD_NONE;
	if (xioctl(g.video, VIDIOC_S_FMT, &f))
		die("VIDIOC_S_FMT");
	if (f.fmt.pix.pixelformat != V4L2_PIX_FMT_RGB24 || f.fmt.pix.width != g.width ||
	    f.fmt.pix.height != g.height)
		fail("the capture device does not do RGB24 at the size %s", "asked");
	g.pitch = f.fmt.pix.bytesperline;
	parm.parm.capture.timeperframe.numerator = 1;
	parm.parm.capture.timeperframe.denominator = g.fps;
	if (xioctl(g.video, VIDIOC_S_PARM, &parm))
		die("VIDIOC_S_PARM");
	g.fps = parm.parm.capture.timeperframe.denominator /
		(parm.parm.capture.timeperframe.numerator ?: 1);

	if (xioctl(g.video, VIDIOC_REQBUFS, &req))
		die(g.mem == IMPORT ? "VIDIOC_REQBUFS (V4L2_MEMORY_DMABUF)" : "VIDIOC_REQBUFS");
	if (req.count != g.nbufs)
		fail("VIDIOC_REQBUFS gave another number of buffers than %s", "asked");
	if (g.sync != CLASSIC && !(req.capabilities & V4L2_BUF_CAP_SUPPORTS_FENCES))
		fail("%s: the capture device has no fence support", "-m fenced/implicit");

	for (i = 0; i < g.nbufs; i++) {
		struct frame_buf *fb = &g.buf[i];

		fb->cap_fence = -1;
		if (g.mem == EXPORT) {
			/* The capture device's buffer, exported and imported into the display. */
			struct v4l2_buffer qb = {
				.index = i,
				.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
				.memory = V4L2_MEMORY_MMAP,
			};
			struct v4l2_exportbuffer e = {
				.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
				.index = i,
				.flags = O_RDWR | O_CLOEXEC,
			};
			struct drm_prime_handle h = { 0 };

			if (xioctl(g.video, VIDIOC_QUERYBUF, &qb))
				die("VIDIOC_QUERYBUF");
			fb->size = qb.length;
			fb->map = mmap(NULL, qb.length, PROT_READ, MAP_SHARED, g.video,
				       qb.m.offset);
			if (fb->map == MAP_FAILED)
				die("mmap of a capture buffer");
			if (xioctl(g.video, VIDIOC_EXPBUF, &e))
				die("VIDIOC_EXPBUF");
			fb->dmabuf = e.fd;
			h.fd = e.fd;
			if (xioctl(g.drm, DRM_IOCTL_PRIME_FD_TO_HANDLE, &h))
				die("DRM_IOCTL_PRIME_FD_TO_HANDLE");
			fb->handle = h.handle;
		} else {
			/* The display's buffer, exported and queued as a DMABUF buffer. */
			struct drm_prime_handle h = { .flags = DRM_CLOEXEC | DRM_RDWR };
			__u32 pitch;

			create_dumb(24, &fb->handle, &pitch, &fb->map, &fb->size);
			if (pitch != g.pitch)
				fail("dumb buffer pitch differs from the capture's %s",
				     "bytesperline");
			h.handle = fb->handle;
			if (xioctl(g.drm, DRM_IOCTL_PRIME_HANDLE_TO_FD, &h))
				die("DRM_IOCTL_PRIME_HANDLE_TO_FD");
			fb->dmabuf = h.fd;
		}
		/* V4L2's RGB24 (bytes R, G, B) is DRM's BGR888 (little-endian B:G:R). */
		fb->fb_id = add_fb(fb->handle, g.pitch, DRM_FORMAT_BGR888);
	}
}

/* rvivid's "Fail Next Buffers" control (src/driver.rs: V4L2_CID_USER_BASE + 0xf100). */
#define RVIVID_CID_FAIL_NEXT_BUFFERS (V4L2_CID_USER_BASE + 0xf100)

static void fail_next_buffer(void)
{
	struct v4l2_control c = { .id = RVIVID_CID_FAIL_NEXT_BUFFERS, .value = 1 };

	if (xioctl(g.video, VIDIOC_S_CTRL, &c))
		die("VIDIOC_S_CTRL Fail Next Buffers");
}

static int fence_status(int fd);

/*
 * -q: the commit of frame @k waits for capture fence @pending; close the video device with
 * buffers queued. Every capture fence still held must signal, and the flip must come.
 */
static void quit_mid_pipeline(unsigned int k, int pending)
{
	unsigned int i, held = 0;
	int status;

	close(g.video);
	g.video = -1;
	wait_flip(k);
	status = fence_status(pending);
	if (status == 0) {
		printf("frame %u: capture fence still pending after close\n", k);
		g.errors++;
	}
	close(pending);
	for (i = 0; i < g.nbufs; i++) {
		if (g.buf[i].cap_fence < 0)
			continue;
		held++;
		if (fence_status(g.buf[i].cap_fence) == 0) {
			printf("buffer %u: capture fence still pending after close\n", i);
			g.errors++;
		}
		close(g.buf[i].cap_fence);
		g.buf[i].cap_fence = -1;
	}
	printf("closed the video device at frame %u: the shown frame's fence %d, %u more "
	       "capture fences held, %s\n", k, status, held,
	       g.errors ? "some pending" : "all signalled");
}

/* ---- the proof by writeback ---- */

/* rvivid's 5x7 digits (src/tpg.rs), bit 4 leftmost. */
static const unsigned char digits[10][7] = {
	{ 0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e }, { 0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e },
	{ 0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f }, { 0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e },
	{ 0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02 }, { 0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e },
	{ 0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e }, { 0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08 },
	{ 0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e }, { 0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c },
};

/* 1 for the counter's white, 0 for its black, -1 for anything else, at (x, y) of @wb. */
static int wb_bit(const struct wb_buf *wb, unsigned int x, unsigned int y)
{
	const unsigned char *p = (const unsigned char *)wb->map + y * wb->pitch + x * 4;

	if (p[0] == 255 && p[1] == 255 && p[2] == 255)
		return 1;
	if (p[0] == 0 && p[1] == 0 && p[2] == 0)
		return 0;
	return -1;
}

/*
 * Reads rvivid's frame counter from a written-back frame (the geometry of src/tpg.rs: 8
 * pixels from the top left, 5x7 digits in cells of 6x9 font units, a unit of `scale` pixels
 * with `scale` fitted to the top eighth of the frame; @ndigits says how wide to expect it).
 * Returns the number, or -1 if the digits are not all clean glyphs.
 */
static long read_counter(const struct wb_buf *wb, unsigned int ndigits)
{
	unsigned int units_w = 6 * ndigits + 1;
	unsigned int avail_h = g.height / 8 > 8 ? g.height / 8 - 8 : 0;
	unsigned int scale = avail_h / 9, d, r, c;
	long n = 0;

	if ((g.width - 16) / units_w < scale)
		scale = (g.width - 16) / units_w;
	if (scale > 4)
		scale = 4;
	if (!scale)
		return -2;	/* too small for the counter: not checked */
	for (d = 0; d < ndigits; d++) {
		unsigned char glyph[7] = { 0 };
		int v, match = -1;

		for (r = 0; r < 7; r++)
			for (c = 0; c < 5; c++) {
				v = wb_bit(wb, 8 + (6 * d + 1 + c) * scale + scale / 2,
					   8 + (1 + r) * scale + scale / 2);
				if (v < 0)
					return -1;
				glyph[r] |= v << (4 - c);
			}
		for (v = 0; v < 10; v++)
			if (!memcmp(glyph, digits[v], 7))
				match = v;
		if (match < 0)
			return -1;
		n = n * 10 + match;
	}
	/* The counter's box ends after the last digit: no digit is missing. */
	if (wb_bit(wb, 8 + (6 * ndigits + 1) * scale + scale / 2, 8 + 4 * scale) >= 0)
		return -1;
	return n;
}

static unsigned int ndigits(__u32 n)
{
	unsigned int d = 1;

	while (n >= 10) {
		n /= 10;
		d++;
	}
	return d;
}

static void wait_fence(int fd, const char *what, unsigned int k)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, 5000) != 1) {
		fprintf(stderr, "frame %u: %s did not signal\n", k, what);
		exit(1);
	}
}

static int fence_status(int fd)
{
	struct sync_file_info info = { 0 };

	if (xioctl(fd, SYNC_IOC_FILE_INFO, &info))
		die("SYNC_IOC_FILE_INFO");
	return info.status;
}

/*
 * Frame @k (buffer @b, dequeued as @vb) was shown by commit k, whose writeback went to @wb
 * with fence @wb_fence: the written-back frame must equal the buffer, and show its sequence
 * number as the frame counter. Returns 0 if it does.
 */
static int check_frame(unsigned int k, const struct frame_buf *b, const struct v4l2_buffer *vb,
		       const struct wb_buf *wb, int wb_fence)
{
	const unsigned char *cap = b->map;
	unsigned int x, y, bad = 0;
	long counter;
	int status;

	wait_fence(wb_fence, "writeback fence", k);
	status = fence_status(wb_fence);
	if (status != 1) {
		printf("frame %u: writeback fence status %d\n", k, status);
		return 1;
	}
	for (y = 0; y < g.height; y++) {
		const unsigned char *c = cap + y * g.pitch;
		const unsigned char *w = (const unsigned char *)wb->map + y * wb->pitch;

		for (x = 0; x < g.width; x++)
			bad += c[3 * x] != w[4 * x + 2] || c[3 * x + 1] != w[4 * x + 1] ||
			       c[3 * x + 2] != w[4 * x];
	}
	counter = read_counter(wb, ndigits(vb->sequence));
	if (bad || (counter != -2 && counter != vb->sequence)) {
		printf("frame %u: buffer %u seq %u: written back %u pixels differ from the "
		       "buffer, counter %ld\n", k, vb->index, vb->sequence, bad, counter);
		return 1;
	}
	return 0;
}

/* ---- the pipelines ---- */

static double ts_us(const struct v4l2_buffer *b)
{
	return b->timestamp.tv_sec * 1e6 + b->timestamp.tv_usec;
}

/* Bookkeeping of frame @k, shown by the flip at @flip_us, once its buffer is dequeued. */
static void account(unsigned int k, const struct v4l2_buffer *vb, double flip_us,
		    __u32 *last_seq, int ok)
{
	double lat = flip_us - ts_us(vb);

	if (vb->flags & V4L2_BUF_FLAG_ERROR)
		g.failed++;
	if (k > 0 && vb->sequence <= *last_seq) {
		printf("frame %u: sequence %u after %u\n", k, vb->sequence, *last_seq);
		g.errors++;
	} else if (k > 0) {
		g.gaps += vb->sequence - *last_seq - 1;
	}
	*last_seq = vb->sequence;
	/* The modeset's flip event (frame 0) comes before the display's first vblank. */
	if (k > 0) {
		g.lat_sum_us += lat;
		if (lat > g.lat_max_us)
			g.lat_max_us = lat;
	}
	g.shown++;
	if (g.verbose)
		printf("frame %u: buffer %u seq %u%s latency %.0f us%s\n", k, vb->index,
		       vb->sequence, vb->flags & V4L2_BUF_FLAG_ERROR ? " ERROR" : "", lat,
		       !g.writeback ? "" : vb->flags & V4L2_BUF_FLAG_ERROR ? " not checked" :
		       ok ? " writeback ok" : " writeback BAD");
}

/*
 * Explicit (or implicit) fences: commit k shows buffer k % N behind its capture out-fence;
 * its release fence gates the next capture into the buffer of frame k - 1.
 */
static void run_fenced(void)
{
	int rel_fence, wb_fence[NUM_WB] = { -1, -1 };
	double flip_us[2];
	__u32 last_seq = 0;
	unsigned int i, k;

	for (i = 0; i < g.nbufs; i++)
		g.buf[i].cap_fence = queue(i, -1, 1);
	if (xioctl(g.video, VIDIOC_STREAMON, &(int){ V4L2_BUF_TYPE_VIDEO_CAPTURE }))
		die("VIDIOC_STREAMON");

	for (k = 0; k <= g.frames; k++) {
		unsigned int prev = (k + g.nbufs - 1) % g.nbufs;
		struct v4l2_buffer vb;
		int ok = 1;

		if (k > 0)
			flip_us[(k - 1) & 1] = wait_flip(k - 1);
		if (k < g.frames) {
			struct frame_buf *b = &g.buf[k % g.nbufs];
			struct wb_buf *wb = g.writeback ? &g.wb[k % NUM_WB] : NULL;

			/* The writeback buffer of commit k - 2 was checked at step k - 1. */
			commit(b, g.sync == FENCED ? b->cap_fence : -1, &rel_fence, wb,
			       wb ? &wb_fence[k % NUM_WB] : NULL, k, k == 0);
			if (g.quit_at && k == g.quit_at) {
				int pending = b->cap_fence;

				b->cap_fence = -1;
				close(rel_fence);
				if (wb)
					close(wb_fence[k % NUM_WB]);
				if (k > 0 && wb)
					close(wb_fence[(k - 1) % NUM_WB]);
				quit_mid_pipeline(k, pending);
				return;
			}
			close(b->cap_fence);	/* the commit holds its own reference */
			b->cap_fence = -1;
			if (g.fail_at && k == g.fail_at)
				fail_next_buffer();
		}
		if (k == 0)
			continue;
		/*
		 * The display took frame k - 1, so it was complete: dequeueing its buffer does
		 * not wait (O_NONBLOCK: EAGAIN would say otherwise).
		 */
		if (dequeue(&vb))
			die("VIDIOC_DQBUF of a frame already shown");
		if (vb.index != prev) {
			fprintf(stderr, "frame %u: dequeued buffer %u, want %u\n", k - 1,
				vb.index, prev);
			exit(1);
		}
		if (g.writeback) {
			int *f = &wb_fence[(k - 1) % NUM_WB];

			if (vb.flags & V4L2_BUF_FLAG_ERROR) {
				/* KMS shows a failed buffer anyway (it ignores fence errors). */
				wait_fence(*f, "writeback fence", k - 1);
				ok = 0;
			} else {
				ok = !check_frame(k - 1, &g.buf[prev], &vb, &g.wb[(k - 1) % NUM_WB],
						  *f);
				g.checked += ok;
				g.errors += !ok;
			}
			close(*f);
			*f = -1;
		}
		account(k - 1, &vb, flip_us[(k - 1) & 1], &last_seq, ok);
		if (k < g.frames) {
			/* Capture into it again once commit k took it off the screen. */
			g.buf[prev].cap_fence = queue(prev, rel_fence, g.sync != CLASSIC);
			close(rel_fence);
		}
	}
	/* The last release fence: the last frame stays on screen, its buffer dequeued. */
}

/*
 * The classic CPU path: wait for a frame (poll, DQBUF), commit it, wait for the flip, queue
 * the buffer it replaced.
 */
static void run_classic(void)
{
	int out_fence, wb_fence = -1, shown = -1;
	__u32 last_seq = 0;
	unsigned int i, k;

	for (i = 0; i < g.nbufs; i++)
		queue(i, -1, 0);
	if (xioctl(g.video, VIDIOC_STREAMON, &(int){ V4L2_BUF_TYPE_VIDEO_CAPTURE }))
		die("VIDIOC_STREAMON");
	for (k = 0; k < g.frames; k++) {
		struct pollfd p = { .fd = g.video, .events = POLLIN };
		struct wb_buf *wb = g.writeback ? &g.wb[k % NUM_WB] : NULL;
		struct v4l2_buffer vb;
		double flip;
		int ok = 1;

		if (poll(&p, 1, 5000) != 1)
			fail("no frame within 5 s%s", "");
		if (dequeue(&vb))
			die("VIDIOC_DQBUF");
		commit(&g.buf[vb.index], -1, &out_fence, wb, wb ? &wb_fence : NULL, k, k == 0);
		flip = wait_flip(k);
		close(out_fence);
		if (wb) {
			if (vb.flags & V4L2_BUF_FLAG_ERROR) {
				wait_fence(wb_fence, "writeback fence", k);
				ok = 0;
			} else {
				ok = !check_frame(k, &g.buf[vb.index], &vb, wb, wb_fence);
				g.checked += ok;
				g.errors += !ok;
			}
			close(wb_fence);
		}
		account(k, &vb, flip, &last_seq, ok);
		if (shown >= 0)
			queue(shown, -1, 0);
		shown = vb.index;
	}
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [-d /dev/videoN] [-c /dev/dri/cardN] [-n frames] [-b buffers]\n"
		"       [-s WxH] [-r fps] [-m fenced|implicit|classic] [-M export|import] [-w] [-v]\n"
		"       [-f frame] [-q frame]\n",
		argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *video = "/dev/video0", *card = NULL;
	struct rusage ru;
	double cpu_us, t0, elapsed_us;
	unsigned int i;
	int opt;

	while ((opt = getopt(argc, argv, "d:c:n:b:s:r:m:M:wvf:q:")) != -1) {
		switch (opt) {
		case 'd': video = optarg; break;
		case 'c': card = optarg; break;
		case 'n': g.frames = atoi(optarg); break;
		case 'b': g.nbufs = atoi(optarg); break;
		case 's':
			if (sscanf(optarg, "%ux%u", &g.width, &g.height) != 2)
				usage(argv[0]);
			break;
		case 'r': g.fps = atoi(optarg); break;
		case 'm':
			if (!strcmp(optarg, "fenced"))
				g.sync = FENCED;
			else if (!strcmp(optarg, "implicit"))
				g.sync = IMPLICIT;
			else if (!strcmp(optarg, "classic"))
				g.sync = CLASSIC;
			else
				usage(argv[0]);
			break;
		case 'M':
			if (!strcmp(optarg, "export"))
				g.mem = EXPORT;
			else if (!strcmp(optarg, "import"))
				g.mem = IMPORT;
			else
				usage(argv[0]);
			break;
		case 'w': g.writeback = 1; break;
		case 'v': g.verbose = 1; break;
		case 'f': g.fail_at = atoi(optarg); break;
		case 'q': g.quit_at = atoi(optarg); break;
		default: usage(argv[0]);
		}
	}
	if (g.nbufs < 2 || g.nbufs > MAX_BUFS || !g.frames || !g.fps)
		usage(argv[0]);

	g.video = open(video, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (g.video < 0)
		die(video);
	g.drm = open_vkms(card);
	set_cap(DRM_CLIENT_CAP_UNIVERSAL_PLANES);
	set_cap(DRM_CLIENT_CAP_ATOMIC);
	if (g.writeback)
		set_cap(DRM_CLIENT_CAP_WRITEBACK_CONNECTORS);
	find_objects();
	create_mode();
	setup_video();
	for (i = 0; g.writeback && i < NUM_WB; i++) {
		struct wb_buf *wb = &g.wb[i];

		create_dumb(32, &wb->handle, &wb->pitch, &wb->map, &wb->size);
		wb->fb_id = add_fb(wb->handle, wb->pitch, DRM_FORMAT_XRGB8888);
	}

	t0 = now_us();
	if (g.sync == CLASSIC)
		run_classic();
	else
		run_fenced();
	elapsed_us = now_us() - t0;

	if (g.video >= 0 &&
	    xioctl(g.video, VIDIOC_STREAMOFF, &(int){ V4L2_BUF_TYPE_VIDEO_CAPTURE }))
		die("VIDIOC_STREAMOFF");
	getrusage(RUSAGE_SELF, &ru);
	cpu_us = ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1e6 +
		 ru.ru_stime.tv_usec;

	/* STREAMOFF signalled every capture out-fence still held; the display keeps its fb. */
	for (i = 0; i < g.nbufs; i++) {
		if (g.buf[i].cap_fence >= 0)
			close(g.buf[i].cap_fence);
		munmap(g.buf[i].map, g.buf[i].size);
		close(g.buf[i].dmabuf);
	}
	for (i = 0; g.writeback && i < NUM_WB; i++)
		munmap(g.wb[i].map, g.wb[i].size);
	if (g.verbose)
		for (i = 0; i < ST_NUM; i++)
			printf("cpu in %s: %.0f us/frame\n", step_name[i],
			       g.shown ? step_cpu_us[i] / g.shown : 0);
	close(g.drm);	/* removes the framebuffers and turns the display off */
	if (g.video >= 0)
		close(g.video);

	printf("%s %s %ux%u %u fps %u buffers: %u frames shown, %u checked, %u failed, "
	       "%u gaps, %.1f fps shown, latency mean %.0f max %.0f us, cpu %.0f us/frame, "
	       "%u errors\n",
	       g.sync == FENCED ? "fenced" : g.sync == IMPLICIT ? "implicit" : "classic",
	       g.mem == EXPORT ? "export" : "import", g.width, g.height, g.fps, g.nbufs,
	       g.shown, g.checked, g.failed, g.gaps,
	       elapsed_us > 0 ? g.shown * 1e6 / elapsed_us : 0,
	       g.shown > 1 ? g.lat_sum_us / (g.shown - 1) : 0, g.lat_max_us,
	       g.shown ? cpu_us / g.shown : 0, g.errors);
	return g.errors ? 1 : 0;
}
