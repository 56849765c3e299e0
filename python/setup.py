# SPDX-License-Identifier: MIT
"""Builds the qed package: qed/__init__.py and the C extension qed._qed.

Where libqed comes from, first that applies:
  - QED_BUILD=DIR: the static library DIR/libqed.a of a build tree (the
    tests use this), headers from ../include (or QED_INCLUDEDIR);
  - QED_LIBDIR=DIR (and QED_INCLUDEDIR): libqed.so in DIR, as staged by
    `make install DESTDIR=...` (the Debian packages);
  - pkg-config libqed: an installed libqed (the libqed-dev package, or
    `make install`), linked as a shared library;
  - this source tree: ../build/libqed.a, built with make when missing.
"""
import os
import shlex
import subprocess

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
TREE = os.path.dirname(HERE)
# What libqed.a needs (libqed.pc's Libs.private and Requires.private).
STATIC_LIBS = ["uring", "pthread", "curl", "nbd"]


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args, "libqed"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return shlex.split(out)


def from_build_tree(build):
    archive = os.path.join(build, "libqed.a")
    if not os.path.exists(archive):
        subprocess.run(["make", "-C", TREE, f"BUILD={build}",
                        os.path.join(build, "libqed.a")], check=True)
    return dict(include_dirs=[os.environ.get("QED_INCLUDEDIR",
                                             os.path.join(TREE, "include"))],
                extra_objects=[archive], libraries=STATIC_LIBS)


def extension_settings():
    build = os.environ.get("QED_BUILD")
    if build:
        return from_build_tree(os.path.abspath(build))
    # A staged install (the Debian build): its header and its libqed.so.
    if os.environ.get("QED_LIBDIR"):
        return dict(include_dirs=[os.environ.get("QED_INCLUDEDIR",
                                                 os.path.join(TREE, "include"))],
                    library_dirs=[os.environ["QED_LIBDIR"]],
                    libraries=["qed"])
    cflags, libs = pkg_config("--cflags"), pkg_config("--libs")
    if cflags is not None and libs is not None:
        return dict(
            include_dirs=[f[2:] for f in cflags if f.startswith("-I")],
            library_dirs=[f[2:] for f in libs if f.startswith("-L")],
            libraries=[f[2:] for f in libs if f.startswith("-l")])
    return from_build_tree(os.path.join(TREE, "build"))


setup(
    name="qed",
    version="2.0.0",
    description="QED (QEMU Enhanced Disk) images from Python, through libqed",
    license="MIT",
    packages=["qed"],
    python_requires=">=3.11",
    ext_modules=[Extension(
        "qed._qed", sources=["qed/_qed.c"],
        extra_compile_args=["-std=c17", "-Wall", "-Wextra",
                            "-Wno-missing-field-initializers",
                            "-Wno-cast-function-type"],
        **extension_settings())],
)
