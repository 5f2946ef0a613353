/* Table lookups (LOGISTIC, TANH, HARD_SWISH of int8 models): y = table[x + offset].
 * The export checked that every representable input lands inside the table. */
#include "aidge_arith.h"

void aidge_lookup(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, int32_t n,
                  const void *table, aidge_dtype tt, int32_t offset)
{
    int32_t i;
    for (i = 0; i < n; ++i)
        aidge_store(y, yt, i, aidge_load(table, tt, aidge_load(x, xt, i) + offset));
}
