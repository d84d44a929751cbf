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
 *                 [-s WxH] [-r fps] [-m fenced|implicit|classic] [-M export|import] [-w] [-C] [-v]
 *                 [-f frame] [-q frame] [-S frame] [-F frame]
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
 *               check, not to measure. vkms's writeback loses jobs under load (see
 *               Documentation/display.rst): -C is the reliable check
 *  -C           proof by CRC: vkms composes every vblank and reports a CRC of the composed
 *               frame (debugfs crtc-0/crc, as igt uses it); every frame shown, for every
 *               vblank it was on screen, must have the CRC of the captured buffer it showed
 *               (computed here from the buffer as vkms composes it: 16-bit ARGB lines, crc32
 *               over each line), and carry its sequence number as the frame counter (read from
 *               the buffer). A buffer is queued again only once vkms has composed a later
 *               frame (its CRC read), since vkms composes after the vblank: checking, not
 *               measuring
 *  -v           one line per frame
 *  -f K         fault: at frame K, make rvivid fail the next buffer it completes (its
 *               "Fail Next Buffers" control); the failed frame's out-fence signals -EIO, but
 *               KMS does not look at fence errors and shows the buffer anyway, so the pipeline
 *               learns of it when it dequeues the buffer (V4L2_BUF_FLAG_ERROR), does not check
 *               that frame, counts it as failed and goes on
 *  -F K         fault: the commit of frame K (>= 1) fails (it asks for a source rectangle
 *               wider than the framebuffer, which the atomic check refuses with ENOSPC; fenced
 *               and implicit modes, 3 buffers or more, 4 with -C). The display never had that
 *               buffer: nothing of the commit is left (no out-fence, no flip event), the frame
 *               on screen stays, the next frame queued is committed in its place, and the
 *               buffer goes back to the capture once its frame is in (dequeued when a later
 *               frame is, which the ordered queue completes after it; its capture fence must
 *               have signalled), queued again without a release fence, and shown later
 *               ("returned" in the summary). Its frame is not checked and not a gap
 *  -q K         quit: right after the commit of frame K (which waits for its capture), close
 *               the video device without STREAMOFF (and unmap its buffers: a mapping keeps the
 *               file open); every capture out-fence still held must have signalled (the
 *               release cancels them), and the pending flip must happen
 *  -S K         the same with VIDIOC_STREAMOFF instead of the close; then every buffer must
 *               be back with the program (QUERYBUF: neither queued, done nor with a fence)
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
#define NUM_WB 3
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
	int returned;		/* its last commit failed (-F): it went back to the capture */
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
	int writeback, crc, verbose, card_index;
	/* -C: the CRC data file, and the entry read ahead (frame, crc; valid if crc_ahead). */
	int crc_data;
	__u32 crc_frame, crc_value;
	int crc_ahead;
	/* the vblank sequence of the last flip events */
	__u32 flip_seq[2];
	unsigned int fail_at, quit_at, fail_commit_at;
	int quit_streamoff;	/* -S: quit by VIDIOC_STREAMOFF, not by closing */
	__u32 crtc, plane, conn, wb_conn, mode_blob;
	struct props p;
	struct frame_buf buf[MAX_BUFS];
	struct wb_buf wb[NUM_WB];
	/* statistics */
	unsigned int shown, checked, errors, gaps, failed, vblanks;
	unsigned int commits_failed, returned;	/* -F: failed commits; their buffers shown later */
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
		if (!xioctl(fd, DRM_IOCTL_VERSION, &v) && !strcmp(name, "vkms")) {
			const char *digits = strpbrk(node, "0123456789");

			g.card_index = digits ? atoi(digits) : 0;
			return fd;
		}
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
 *
 * With @invalid (-F), the commit asks for a source rectangle one pixel wider than the
 * framebuffer, which the atomic check refuses (ENOSPC): a commit that fails. Returns 0, or
 * the errno of a commit that failed as it should; any other outcome ends the program.
 */
static int commit(struct frame_buf *b, int in_fence, int *out_fence, struct wb_buf *wb,
		  int *wb_fence, unsigned int k, int modeset, int invalid)
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
	if (invalid)
		add(&c, g.plane, g.p.plane_src[2], (__u64)(g.width + 1) << 16);
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
	/* A flip event of a commit that failed would not be the one wait_flip() wants. */
	a.user_data = invalid ? k | 1ull << 63 : k;
	*out_fence = -1;
	if (wb_fence)
		*wb_fence = -1;
	t = cpu_now_us();
	if (xioctl(g.drm, DRM_IOCTL_MODE_ATOMIC, &a)) {
		if (!invalid || errno != ENOSPC)
			die("DRM_IOCTL_MODE_ATOMIC");
		/* Nothing of it is left: no out-fence (its fd is not installed), no event. */
		if (*out_fence != -1 || (wb_fence && *wb_fence != -1))
			fail("a commit that failed returned an out-fence%s", "");
		return ENOSPC;
	}
	if (invalid)
		fail("a commit with a source wider than its framebuffer %s", "succeeded");
	step_cpu_us[ST_COMMIT] += cpu_now_us() - t;
	return 0;
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
	g.flip_seq[k & 1] = ev.sequence;
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

/* rvivid's "Fail Next Buffers" control (src/driver.rs: V4L2_CID_USER_BASE | 0xf000). */
#define RVIVID_CID_FAIL_NEXT_BUFFERS (V4L2_CID_USER_BASE | 0xf000)

static void fail_next_buffer(void)
{
	struct v4l2_control c = { .id = RVIVID_CID_FAIL_NEXT_BUFFERS, .value = 1 };

	if (xioctl(g.video, VIDIOC_S_CTRL, &c))
		die("VIDIOC_S_CTRL Fail Next Buffers");
}

static int fence_status(int fd);

/*
 * -q, -S: the commit of frame @k waits for capture fence @pending; close the video device
 * with buffers queued (-q), or stop streaming (-S). Every capture fence still held must
 * signal, and the flip must come; after STREAMOFF every buffer is back with the program
 * (neither queued, done nor with a fence).
 */
static void quit_mid_pipeline(unsigned int k, int pending)
{
	unsigned int i, held = 0;
	int status;

	if (g.quit_streamoff) {
		if (xioctl(g.video, VIDIOC_STREAMOFF, &(int){ V4L2_BUF_TYPE_VIDEO_CAPTURE }))
			die("VIDIOC_STREAMOFF");
	} else {
		/*
		 * A mapping of a capture buffer holds the video device's file: the last one to
		 * go releases it (the close that takes the buffers back and signals their
		 * fences).
		 */
		for (i = 0; i < g.nbufs && g.mem == EXPORT; i++) {
			munmap(g.buf[i].map, g.buf[i].size);
			g.buf[i].map = NULL;
		}
		close(g.video);
		g.video = -1;
	}
	wait_flip(k);
	status = fence_status(pending);
	if (status == 0) {
		printf("frame %u: capture fence still pending after %s\n", k,
		       g.quit_streamoff ? "STREAMOFF" : "close");
		g.errors++;
	}
	close(pending);
	for (i = 0; i < g.nbufs; i++) {
		if (g.buf[i].cap_fence < 0)
			continue;
		held++;
		if (fence_status(g.buf[i].cap_fence) == 0) {
			printf("buffer %u: capture fence still pending after %s\n", i,
			       g.quit_streamoff ? "STREAMOFF" : "close");
			g.errors++;
		}
		close(g.buf[i].cap_fence);
		g.buf[i].cap_fence = -1;
	}
	for (i = 0; g.quit_streamoff && i < g.nbufs; i++) {
		struct v4l2_buffer b = {
			.index = i,
			.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
			.memory = g.mem == IMPORT ? V4L2_MEMORY_DMABUF : V4L2_MEMORY_MMAP,
		};

		if (xioctl(g.video, VIDIOC_QUERYBUF, &b))
			die("VIDIOC_QUERYBUF");
		if (b.flags & (V4L2_BUF_FLAG_QUEUED | V4L2_BUF_FLAG_DONE | V4L2_BUF_FLAG_IN_FENCE |
			       V4L2_BUF_FLAG_OUT_FENCE)) {
			printf("buffer %u: flags %#x after STREAMOFF\n", i, b.flags);
			g.errors++;
		}
	}
	printf("%s at frame %u: the shown frame's fence %d, %u more capture fences held, %s\n",
	       g.quit_streamoff ? "stopped streaming" : "closed the video device", k, status,
	       held, g.errors ? "some pending" : "all signalled");
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

/* 1 for the counter's white, 0 for its black, -1 for anything else, at (x, y) of @img. */
static int wb_bit(const void *img, unsigned int x, unsigned int y)
{
	const struct wb_buf *wb = img;
	const unsigned char *p = (const unsigned char *)wb->map + y * wb->pitch + x * 4;

	if (p[0] == 255 && p[1] == 255 && p[2] == 255)
		return 1;
	if (p[0] == 0 && p[1] == 0 && p[2] == 0)
		return 0;
	return -1;
}

/* The same in a captured buffer (RGB24). */
static int cap_bit(const void *img, unsigned int x, unsigned int y)
{
	const struct frame_buf *b = img;
	const unsigned char *p = (const unsigned char *)b->map + y * g.pitch + x * 3;

	if (p[0] == 255 && p[1] == 255 && p[2] == 255)
		return 1;
	if (p[0] == 0 && p[1] == 0 && p[2] == 0)
		return 0;
	return -1;
}

/*
 * Reads rvivid's frame counter from a frame (@bit reads its pixels) (the geometry of src/tpg.rs: 8
 * pixels from the top left, 5x7 digits in cells of 6x9 font units, a unit of `scale` pixels
 * with `scale` fitted to the top eighth of the frame; @ndigits says how wide to expect it).
 * Returns the number, or -1 if the digits are not all clean glyphs.
 */
static long read_counter(int (*bit)(const void *, unsigned int, unsigned int), const void *img,
			 unsigned int ndigits)
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
				v = bit(img, 8 + (6 * d + 1 + c) * scale + scale / 2,
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
	if (bit(img, 8 + (6 * ndigits + 1) * scale + scale / 2, 8 + 4 * scale) >= 0)
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
	counter = read_counter(wb_bit, wb, ndigits(vb->sequence));
	if (bad || (counter != -2 && counter != vb->sequence)) {
		printf("frame %u: buffer %u seq %u: written back %u pixels differ from the "
		       "buffer, counter %ld\n", k, vb->index, vb->sequence, bad, counter);
		return 1;
	}
	return 0;
}

/* ---- the proof by CRC ---- */

/* The kernel's crc32_le(): reflected CRC-32 (0xedb88320), no inversion. */
static __u32 crc32_le(__u32 crc, const unsigned char *p, size_t len)
{
	static __u32 table[256];
	unsigned int i, j;

	if (!table[1])
		for (i = 0; i < 256; i++) {
			__u32 c = i;

			for (j = 0; j < 8; j++)
				c = c & 1 ? (c >> 1) ^ 0xedb88320 : c >> 1;
			table[i] = c;
		}
	while (len--)
		crc = (crc >> 8) ^ table[(crc ^ *p++) & 0xff];
	return crc;
}

/*
 * The CRC vkms reports for a frame that shows @b alone (vkms_composer.c): each line composed
 * as 16-bit A, R, G, B per pixel (an 8-bit value v becomes v * 257, opaque), crc32_le() over
 * the lines in turn, from 0.
 */
static __u32 expected_crc(const struct frame_buf *b)
{
	unsigned char line[4096 * 8];
	const unsigned char *cap = b->map;
	unsigned int x, y;
	__u32 crc = 0;

	for (y = 0; y < g.height; y++) {
		const unsigned char *c = cap + y * g.pitch;

		for (x = 0; x < g.width; x++) {
			unsigned char *o = line + 8 * x;

			o[0] = o[1] = 0xff;
			o[2] = o[3] = c[3 * x];
			o[4] = o[5] = c[3 * x + 1];
			o[6] = o[7] = c[3 * x + 2];
		}
		crc = crc32_le(crc, line, 8 * g.width);
	}
	return crc;
}

/* Turns vkms's CRC on (the CRTC must be active): source "auto", then open its data. */
static void crc_start(void)
{
	char path[96];
	FILE *f;

	snprintf(path, sizeof(path), "/sys/kernel/debug/dri/%d/crtc-0/crc/control",
		 g.card_index);
	f = fopen(path, "w");
	if (!f || fputs("auto", f) < 0 || fclose(f))
		die(path);
	snprintf(path, sizeof(path), "/sys/kernel/debug/dri/%d/crtc-0/crc/data", g.card_index);
	g.crc_data = open(path, O_RDONLY | O_CLOEXEC);
	if (g.crc_data < 0)
		die(path);
}

/* The next CRC entry (blocks until vkms composed one). */
static void crc_next(void)
{
	char line[64];
	ssize_t n;

	/* One entry per read(), which must have room for a whole line. */
	do
		n = read(g.crc_data, line, sizeof(line) - 1);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		die("reading the CRC data");
	line[n > 0 ? n : 0] = 0;
	if (sscanf(line, "%x %x", &g.crc_frame, &g.crc_value) != 2)
		fail("unexpected CRC data: %s", line);
	g.crc_ahead = 1;
}

/*
 * Frame @k (buffer @b, sequence @seq) was on screen from the flip with vblank sequence
 * @from until the one with @to: every CRC vkms reported for those vblanks must be the
 * buffer's. Reads up to the first entry of a later vblank, so vkms is done reading the
 * buffer when this returns. Returns 0 if they all match and there was at least one.
 */
static int check_crcs(unsigned int k, const struct frame_buf *b, __u32 seq, __u32 from,
		      __u32 to)
{
	__u32 want = expected_crc(b);
	unsigned int n = 0, bad = 0;

	for (;;) {
		if (!g.crc_ahead)
			crc_next();
		/* vblank counters are 32-bit and wrap */
		if ((__s32)(g.crc_frame - to) >= 0)
			break;
		g.crc_ahead = 0;
		if (k > 0 && (__s32)(g.crc_frame - from) < 0)
			continue;	/* before this frame's flip: the last frame's, checked */
		n++;
		if (g.crc_value != want) {
			printf("frame %u: seq %u: vblank %u has CRC %08x, the buffer's is %08x\n",
			       k, seq, g.crc_frame, g.crc_value, want);
			bad++;
		}
	}
	g.vblanks += n;
	if (!n && k > 0)
		printf("frame %u: seq %u: no CRC for its vblanks %u..%u\n", k, seq, from, to);
	return bad || !n;
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
		       !(g.writeback || g.crc) ? "" :
		       vb->flags & V4L2_BUF_FLAG_ERROR ? " not checked" : ok ? " ok" : " BAD");
}

/*
 * The capture queue's frames in QBUF order, which is the order the ordered queue fills and
 * returns them in: entry q % RING is the q-th VIDIOC_QBUF's buffer and what became of its
 * frame. Frames are given to the commits in that order.
 */
#define RING (2 * MAX_BUFS)
enum { QUEUED = -1, RETURNED = -2 };
static struct {
	unsigned int buf;
	int commit;	/* the commit that shows it, QUEUED, or RETURNED (its commit failed) */
} ring[RING];
static unsigned int q_next, q_commit, q_deq;	/* the next QBUF, commit, DQBUF */

/* Queues buffer @i for the next frame, behind @in_fence (-1: none), with an out-fence. */
static void queue_frame(unsigned int i, int in_fence)
{
	g.buf[i].cap_fence = queue(i, in_fence, 1);
	ring[q_next % RING].buf = i;
	ring[q_next % RING].commit = QUEUED;
	q_next++;
}

/*
 * -F: the commit of the frame in @vb's buffer failed, so the display never had the buffer:
 * it goes back to the capture (queued again with no release fence, if @requeue) and is shown
 * later. Its frame is complete (its capture fence signalled) and is not checked.
 */
static void take_back(const struct v4l2_buffer *vb, __u32 *last_seq, int requeue)
{
	struct frame_buf *b = &g.buf[vb->index];
	int status = fence_status(b->cap_fence);

	/* A failed buffer's fence has an error (-EIO, -ETIMEDOUT at its deadline). */
	if (vb->flags & V4L2_BUF_FLAG_ERROR ? status >= 0 : status != 1) {
		printf("buffer %u seq %u (not shown): capture fence status %d, flags %#x\n",
		       vb->index, vb->sequence, status, vb->flags);
		g.errors++;
	}
	close(b->cap_fence);
	b->cap_fence = -1;
	/* Not a gap (rvivid captured it) and not shown; it must still be in order. */
	if (vb->sequence <= *last_seq) {
		printf("buffer %u: sequence %u after %u\n", vb->index, vb->sequence, *last_seq);
		g.errors++;
	} else {
		g.gaps += vb->sequence - *last_seq - 1;
	}
	*last_seq = vb->sequence;
	if (g.verbose)
		printf("buffer %u seq %u: its commit failed, back to the capture\n", vb->index,
		       vb->sequence);
	if (requeue)
		queue_frame(vb->index, -1);
}

/*
 * Explicit (or implicit) fences: commit k shows the oldest frame queued, behind its capture
 * out-fence; its release fence gates the next capture into the buffer of commit k - 1. With -C,
 * a buffer is recycled one commit later, once vkms has composed its last vblank. A commit that
 * fails (-F) leaves the frame it was for to the capture (take_back()), and the next frame is
 * committed instead.
 */
static void run_fenced(void)
{
	unsigned int lag = g.crc ? 2 : 1, commits = g.frames + lag - 1;
	int rel[2] = { -1, -1 }, wb_fence[NUM_WB] = { -1, -1, -1 };
	double flip_us[2] = { 0, 0 };
	__u32 last_seq = 0;
	unsigned int i, j, k;

	for (i = 0; i < g.nbufs; i++)
		queue_frame(i, -1);
	if (xioctl(g.video, VIDIOC_STREAMON, &(int){ V4L2_BUF_TYPE_VIDEO_CAPTURE }))
		die("VIDIOC_STREAMON");

	for (k = 0; k <= commits; k++) {
		struct v4l2_buffer vb;
		unsigned int idx;
		int ok = 1, shown_by;

		if (k > 0)
			flip_us[(k - 1) & 1] = wait_flip(k - 1);
		if (k == 1 && g.crc)
			crc_start();	/* the CRTC is active now */
		if (k < commits) {
			struct wb_buf *wb = g.writeback ? &g.wb[k % NUM_WB] : NULL;
			struct frame_buf *b;

			/* The writeback buffer of commit k - 3 was checked at step k - 3 + lag. */
			for (;;) {
				int invalid = g.fail_commit_at && k == g.fail_commit_at &&
					      !g.commits_failed;

				if (q_commit == q_next)
					fail("commit %s: no frame queued to show", "after a failure");
				b = &g.buf[ring[q_commit % RING].buf];
				if (!commit(b, g.sync == FENCED ? b->cap_fence : -1, &rel[k & 1], wb,
					    wb ? &wb_fence[k % NUM_WB] : NULL, k, k == 0, invalid))
					break;
				/* The display did not take the buffer; its frame goes back. */
				g.commits_failed++;
				b->returned = 1;
				ring[q_commit++ % RING].commit = RETURNED;
			}
			ring[q_commit++ % RING].commit = k;
			if (b->returned) {
				b->returned = 0;
				g.returned++;	/* back on the display */
			}
			if (g.quit_at && k == g.quit_at) {
				int pending = b->cap_fence;

				b->cap_fence = -1;
				for (i = 0; i < 2; i++)
					if (rel[i] >= 0)
						close(rel[i]);
				for (i = 0; i < NUM_WB; i++)
					if (wb_fence[i] >= 0)
						close(wb_fence[i]);
				quit_mid_pipeline(k, pending);
				return;
			}
			close(b->cap_fence);	/* the commit holds its own reference */
			b->cap_fence = -1;
			if (g.fail_at && k == g.fail_at)
				fail_next_buffer();
		}
		if (k < lag)
			continue;
		/* Frame j (commit j's) is off the screen since commit j + 1 flipped. */
		j = k - lag;
		/*
		 * The display took frame j, so it was complete, and so are the frames queued
		 * before it (the queue is ordered), those of failed commits too: dequeueing them
		 * does not wait (O_NONBLOCK: EAGAIN would say otherwise).
		 */
		for (;;) {
			if (dequeue(&vb))
				die("VIDIOC_DQBUF of a frame already shown");
			if (vb.index != ring[q_deq % RING].buf) {
				fprintf(stderr, "frame %u: dequeued buffer %u, want %u\n", j, vb.index,
					ring[q_deq % RING].buf);
				exit(1);
			}
			shown_by = ring[q_deq++ % RING].commit;
			if (shown_by != RETURNED)
				break;
			take_back(&vb, &last_seq, k < commits);
		}
		/* The ring said which buffer holds it (checked above). */
		if (shown_by != (int)j) {
			fprintf(stderr, "frame %u: dequeued buffer %u of commit %d\n", j, vb.index,
				shown_by);
			exit(1);
		}
		idx = vb.index;
		if (vb.flags & V4L2_BUF_FLAG_ERROR) {
			/* KMS shows a failed buffer anyway (it ignores fence errors): not checked. */
			if (g.writeback)
				wait_fence(wb_fence[j % NUM_WB], "writeback fence", j);
			if (g.crc)
				check_crcs(j, &g.buf[idx], vb.sequence, g.flip_seq[j & 1],
					   g.flip_seq[(j + 1) & 1]);
			ok = 0;
		} else if (g.writeback || g.crc) {
			if (g.writeback)
				ok = !check_frame(j, &g.buf[idx], &vb, &g.wb[j % NUM_WB],
						  wb_fence[j % NUM_WB]);
			if (g.crc) {
				long counter = read_counter(cap_bit, &g.buf[idx],
							    ndigits(vb.sequence));

				if (counter != -2 && counter != vb.sequence) {
					printf("frame %u: buffer %u seq %u: frame counter %ld\n", j,
					       idx, vb.sequence, counter);
					ok = 0;
				}
				if (check_crcs(j, &g.buf[idx], vb.sequence, g.flip_seq[j & 1],
					       g.flip_seq[(j + 1) & 1]) && (j > 0 || g.vblanks))
					ok = 0;
			}
			g.checked += ok;
			g.errors += !ok;
		}
		if (g.writeback) {
			close(wb_fence[j % NUM_WB]);
			wb_fence[j % NUM_WB] = -1;
		}
		account(j, &vb, flip_us[j & 1], &last_seq, ok);
		/* Capture into it again once commit j + 1 took it off the screen. */
		if (k < commits)
			queue_frame(idx, rel[(j + 1) & 1]);
		close(rel[(j + 1) & 1]);
		rel[(j + 1) & 1] = -1;
	}
	for (i = 0; i < 2; i++)
		if (rel[i] >= 0)
			close(rel[i]);
	/* The last frame stays on screen, its buffer dequeued. */
}

/*
 * The classic CPU path: wait for a frame (poll, DQBUF), commit it, wait for the flip, queue
 * the buffer it replaced.
 */
static void run_classic(void)
{
	int out_fence, wb_fence = -1, shown = -1;
	struct v4l2_buffer prev = { 0 };
	double prev_flip = 0;
	/* With -C, one more frame is shown, to end the last one's time on screen. */
	unsigned int i, k, total = g.frames + g.crc;
	__u32 last_seq = 0;

	for (i = 0; i < g.nbufs; i++)
		queue(i, -1, 0);
	if (xioctl(g.video, VIDIOC_STREAMON, &(int){ V4L2_BUF_TYPE_VIDEO_CAPTURE }))
		die("VIDIOC_STREAMON");
	for (k = 0; k <= total; k++) {
		struct pollfd p = { .fd = g.video, .events = POLLIN };
		struct wb_buf *wb = g.writeback ? &g.wb[k % NUM_WB] : NULL;
		struct v4l2_buffer vb;
		double flip = 0;
		int ok = 1;

		if (k < total) {
			if (poll(&p, 1, 5000) != 1)
				fail("no frame within 5 s%s", "");
			if (dequeue(&vb))
				die("VIDIOC_DQBUF");
			commit(&g.buf[vb.index], -1, &out_fence, wb, wb ? &wb_fence : NULL, k,
			       k == 0, 0);
			flip = wait_flip(k);
			close(out_fence);
			if (k == 0 && g.crc)
				crc_start();
		}
		/* Frame k - 1 is off the screen: check it, and queue its buffer again. */
		if (k > 0 && k - 1 < g.frames) {
			int bad = 0;

			if (g.crc && !(prev.flags & V4L2_BUF_FLAG_ERROR)) {
				bad = check_crcs(k - 1, &g.buf[shown], prev.sequence,
						 g.flip_seq[(k - 1) & 1], g.flip_seq[k & 1]) &&
				      (k > 1 || g.vblanks);
				g.checked += !bad;
				g.errors += bad;
			}
			account(k - 1, &prev, prev_flip, &last_seq, !bad);
		}
		if (k > 0 && k < total)
			queue(shown, -1, 0);
		if (k == total)
			break;
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
			if (!ok)
				printf("frame %u: writeback differs\n", k);
		}
		shown = vb.index;
		prev = vb;
		prev_flip = flip;
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
		"       [-s WxH] [-r fps] [-m fenced|implicit|classic] [-M export|import] [-w] [-C] [-v]\n"
		"       [-f frame] [-q frame] [-S frame] [-F frame]\n",
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

	while ((opt = getopt(argc, argv, "d:c:n:b:s:r:m:M:wCvf:q:F:S:")) != -1) {
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
		case 'C': g.crc = 1; break;
		case 'v': g.verbose = 1; break;
		case 'f': g.fail_at = atoi(optarg); break;
		case 'q': g.quit_at = atoi(optarg); g.quit_streamoff = 0; break;
		case 'S': g.quit_at = atoi(optarg); g.quit_streamoff = 1; break;
		case 'F': g.fail_commit_at = atoi(optarg); break;
		default: usage(argv[0]);
		}
	}
	if (g.nbufs < 2 || g.nbufs > MAX_BUFS || !g.frames || !g.fps)
		usage(argv[0]);
	/* -F: the commit after the failed one needs a frame queued besides the failed one's. */
	if (g.fail_commit_at && (g.sync == CLASSIC || g.fail_commit_at >= g.frames ||
				 g.nbufs < 3u + g.crc))
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
		if (g.buf[i].map)
			munmap(g.buf[i].map, g.buf[i].size);
		close(g.buf[i].dmabuf);
	}
	for (i = 0; g.writeback && i < NUM_WB; i++)
		munmap(g.wb[i].map, g.wb[i].size);
	if (g.crc_data > 0)
		close(g.crc_data);	/* turns the CRC off */
	if (g.verbose)
		for (i = 0; i < ST_NUM; i++)
			printf("cpu in %s: %.0f us/frame\n", step_name[i],
			       g.shown ? step_cpu_us[i] / g.shown : 0);
	close(g.drm);	/* removes the framebuffers and turns the display off */
	if (g.video >= 0)
		close(g.video);

	printf("%s %s %ux%u %u fps %u buffers: %u frames shown, %u checked (%u vblanks), %u failed, "
	       "%u gaps, %.1f fps shown, latency mean %.0f max %.0f us, cpu %.0f us/frame, "
	       "%u commits failed, %u returned, %u errors\n",
	       g.sync == FENCED ? "fenced" : g.sync == IMPLICIT ? "implicit" : "classic",
	       g.mem == EXPORT ? "export" : "import", g.width, g.height, g.fps, g.nbufs,
	       g.shown, g.checked, g.vblanks, g.failed, g.gaps,
	       elapsed_us > 0 ? g.shown * 1e6 / elapsed_us : 0,
	       g.shown > 1 ? g.lat_sum_us / (g.shown - 1) : 0, g.lat_max_us,
	       g.shown ? cpu_us / g.shown : 0, g.commits_failed, g.returned, g.errors);
	return g.errors ? 1 : 0;
}
