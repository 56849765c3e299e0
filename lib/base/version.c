/* SPDX-License-Identifier: MIT */
/* The library's version, as compiled: a program built against an older
 * header compares it with the QED_VERSION_* it saw. */
#include "util.h"

const char *qed_version(void)
{
    return QED_VERSION_STRING;
}

unsigned qed_version_number(void)
{
    return QED_VERSION_NUMBER;
}
