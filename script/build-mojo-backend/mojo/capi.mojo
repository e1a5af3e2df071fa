# The C ABI of the backend library (libmlperf_mojo.so), called from Python through ctypes: ctypes releases
# the GIL for the call, so LoadGen's threads keep running while Mojo computes. Every argument is an address or
# a count; nothing is copied. Return codes: 0 ok, else an error (mm_forward: 1).
from std.sys import simd_width_of

from engine import CTRL_SLOTS, OPW, forward, start, stop

comptime ABI_VERSION = 1


@export
def mm_abi_version() abi("C") -> Int:
    return ABI_VERSION


@export
def mm_layout() abi("C") -> Int:
    """OPW * 1000 + CTRL_SLOTS: the planner checks it matches its own record and control-block sizes."""
    return OPW * 1000 + CTRL_SLOTS


@export
def mm_simd_width() abi("C") -> Int:
    return simd_width_of[DType.float32]()


@export
def mm_start(ctrl: Int) abi("C") -> Int:
    return start(ctrl)


@export
def mm_forward(ctrl: Int) abi("C") -> Int:
    try:
        forward(ctrl)
    except e:
        print("mojo backend:", e)
        return 1
    return 0


@export
def mm_stop(ctrl: Int) abi("C") -> Int:
    stop(ctrl)
    return 0
