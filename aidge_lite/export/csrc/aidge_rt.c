/* Library state: the overflow counter of the accumulator rule. */
#include "aidge_rt.h"

int64_t aidge_overflows = 0;
