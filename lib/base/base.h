/* SPDX-License-Identifier: MIT */
/* The base layer's face: what every layer above may use of it (errors and
 * small helpers, views of I/O vectors, the event loop).  Files outside
 * lib/base include this header, never the ones it gathers. */
#ifndef QED_LIB_BASE_H
#define QED_LIB_BASE_H

#include "abi.h"
#include "iov.h"
#include "loop.h"
#include "util.h"

#endif
