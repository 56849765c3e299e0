/* SPDX-License-Identifier: MIT */
/* The header's version macros agree with each other and with the
 * library's qed_version() and qed_version_number(). */
#include <stdio.h>

#include "../tap.h"
#include "qed.h"

int main(void)
{
    char built[32];

    snprintf(built, sizeof(built), "%d.%d.%d", QED_VERSION_MAJOR,
             QED_VERSION_MINOR, QED_VERSION_MICRO);
    is_str(QED_VERSION_STRING, built, "QED_VERSION_STRING is MAJOR.MINOR.MICRO");
    is_str(qed_version(), QED_VERSION_STRING, "qed_version() is the header's version");
    is_u64(qed_version_number(), QED_VERSION_NUMBER, "qed_version_number() is QED_VERSION_NUMBER");
    is_u64(QED_VERSION_NUMBER, (2u << 16) | (QED_VERSION_MINOR << 8) | QED_VERSION_MICRO,
           "QED_VERSION_NUMBER encodes major << 16 | minor << 8 | micro, major 2");
    ok(QED_CHECK_VERSION(2, 0, 0), "QED_CHECK_VERSION(2, 0, 0) holds");
    ok(!QED_CHECK_VERSION(QED_VERSION_MAJOR, QED_VERSION_MINOR, QED_VERSION_MICRO + 1),
       "QED_CHECK_VERSION of the next micro release does not");
#if defined(QED_HAVE_LOOP_FD) && defined(QED_HAVE_TRACE) && defined(QED_HAVE_LOOP_CALL_SOON)
    ok(1, "the feature macros are defined");
#else
    ok(0, "the feature macros are defined");
#endif
    return tap_done();
}
