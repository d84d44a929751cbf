// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for the static inline functions rvb2's Rust code needs; see
 * include/rvb2_helpers.h.
 */
#include <media/v4l2-dev.h>

#include "rvb2_helpers.h"

const char *rvb2_video_device_node_name(struct video_device *vdev)
{
	return video_device_node_name(vdev);
}
