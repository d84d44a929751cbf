// SPDX-License-Identifier: GPL-2.0
/*
 * Prints the host's TSC frequency in kHz, measured against CLOCK_MONOTONIC_RAW over 200 ms.
 *
 * Under QEMU TCG the guest's RDTSC reads the host's TSC, and the guest kernel cannot calibrate
 * it (no PIT, HPET or ACPI PM timer in rvb2's configuration), so tools/vm tells it the
 * frequency with tsc_early_khz=; the guest then uses the TSC as its clocksource.
 */
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC_RAW, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void)
{
	double t0 = now(), t1;
	unsigned long long c0 = __rdtsc(), c1;

	do
		t1 = now();
	while (t1 - t0 < 0.2);
	c1 = __rdtsc();
	printf("%.0f\n", (c1 - c0) / (t1 - t0) / 1000.0);
	return 0;
}
