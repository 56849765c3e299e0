/* SPDX-License-Identifier: MIT */
/* The trace switch: lines go to the callback the program set, formatted
 * only when there is one. */
#include <stdarg.h>
#include <stdio.h>

#include "util.h"

/* Lines are short; a longer one is cut rather than allocated for. */
#define TRACE_LINE_MAX 256

qed_trace_callback *qedi_trace_callback;
static void *trace_opaque;

void qed_set_trace(qed_trace_callback *cb, void *opaque)
{
    trace_opaque = opaque;
    qedi_trace_callback = cb;
}

void qedi_trace_line(const char *fmt, ...)
{
    qed_trace_callback *cb = qedi_trace_callback;
    char line[TRACE_LINE_MAX];
    va_list ap;

    if (!cb)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    cb(trace_opaque, line);
}
