# The plan interpreter and its thread pool.
#
# A plan (made by cm_mlperf.mojo.plan from the ONNX graph) is an int64 array of fixed-width operator records,
# a float32 array of their float parameters and a table of buffer addresses (weights, activations: numpy
# arrays owned by the caller, used in place). `forward` runs every operator on all threads, each computing its
# share, with a barrier between operators. Worker threads are POSIX threads started once per engine; between
# batches they sleep on a futex, so an idle engine costs no CPU.
#
# Everything the threads share lives in a caller-owned int64 "control block" (below), so an engine is just
# addresses: the Python backend (ctypes, GIL released) and the native Mojo harness drive it the same way.
from std.atomic import Atomic
from std.ffi import external_call
from std.memory import Pointer

from kernels import (
    FPtr,
    activation,
    add,
    conv2d,
    depthwise_conv2d,
    fptr,
    gemm,
    global_avg_pool,
    max_pool,
    nchw_to_nhwc,
    nhwc_to_nchw,
    softmax,
)

comptime IPtr = Pointer[Int64, MutUntrackedOrigin]

# operator record: OPW int64 fields
comptime OPW = 24
comptime F_CODE = 0
comptime F_X = 1
comptime F_W = 2
comptime F_B = 3
comptime F_Y = 4
comptime F_Z = 5
comptime F_H = 6
comptime F_WD = 7
comptime F_C = 8
comptime F_CS = 9
comptime F_OH = 10
comptime F_OW = 11
comptime F_CO = 12
comptime F_KH = 13
comptime F_KW = 14
comptime F_SH = 15
comptime F_SW = 16
comptime F_PT = 17
comptime F_PL = 18
comptime F_ACT = 19
comptime F_CLASSES = 20
comptime F_SIZE = 21

comptime OP_NCHW_TO_NHWC = 1
comptime OP_CONV = 2
comptime OP_DWCONV = 3
comptime OP_ADD = 4
comptime OP_ACT = 5
comptime OP_MAXPOOL = 6
comptime OP_GAP = 7
comptime OP_GEMM = 8
comptime OP_SOFTMAX = 9
comptime OP_NHWC_TO_NCHW = 10

# control block: int64 slots; the counters threads write sit on their own cache lines
comptime C_GEN = 0  # bumped to start a batch (futex word: its low 32 bits)
comptime C_OP = 8  # the operator being computed; the thread finishing its last chunk moves it on
comptime C_DONE = 16  # workers finished with the batch
comptime C_STARTED = 24  # workers that ever registered
comptime C_ALIVE = 32  # workers running
comptime C_NTHREADS = 40
comptime C_PLAN = 41
comptime C_NOPS = 42
comptime C_TABLE = 43
comptime C_FPARAMS = 44
comptime C_BATCH = 45
comptime C_STOP = 46
comptime C_CHUNKS = 47  # chunks each operator is cut into (a few per thread)
comptime C_ERR = 48  # 1 + the index of an operator that failed
comptime C_COUNTERS = 56  # address of 16 int64 per operator: chunks claimed (+0) and finished (+8)
comptime CTRL_SLOTS = 64

comptime SYS_FUTEX = 202
comptime FUTEX_WAIT_PRIVATE = 128
comptime FUTEX_WAKE_PRIVATE = 129
comptime SPINS_BEFORE_SLEEP = 20000


@always_inline
def iptr(addr: Int) -> IPtr:
    return IPtr(unsafe_from_address=addr)


@always_inline
def slot(ctrl: Int, i: Int) -> IPtr:
    return iptr(ctrl + i * 8)


@always_inline
def aload(p: IPtr) -> Int:
    return Int(Atomic[Int64].load(p))


@always_inline
def aadd(p: IPtr, v: Int) -> Int:
    return Int(Atomic[Int64].fetch_add(p, Int64(v)))


@always_inline
def relax(spins: Int):
    if spins % 64 == 63:
        _ = external_call["sched_yield", Int32]()


@always_inline
def _f(op: IPtr, i: Int) -> Int:
    return Int(op.unsafe_load(i))


@always_inline
def _buf(op: IPtr, table: IPtr, i: Int) -> FPtr:
    return fptr(Int(table.unsafe_load(Int(op.unsafe_load(i)))))


def run_op(op: IPtr, table: IPtr, fp: FPtr, index: Int, batch: Int, tid: Int, nth: Int) raises:
    var code = _f(op, F_CODE)
    var act = _f(op, F_ACT)
    var lo = fp.unsafe_load(index * 2)
    var hi = fp.unsafe_load(index * 2 + 1)
    if code == OP_CONV:
        conv2d(_buf(op, table, F_X), _buf(op, table, F_W), _buf(op, table, F_B), _buf(op, table, F_Y), Int(table.unsafe_load(0)), batch,
               _f(op, F_H), _f(op, F_WD), _f(op, F_C), _f(op, F_CS), _f(op, F_OH), _f(op, F_OW), _f(op, F_CO),
               _f(op, F_KH), _f(op, F_KW), _f(op, F_SH), _f(op, F_SW), _f(op, F_PT), _f(op, F_PL), act, lo, hi, tid, nth)
    elif code == OP_DWCONV:
        depthwise_conv2d(_buf(op, table, F_X), _buf(op, table, F_W), _buf(op, table, F_B), _buf(op, table, F_Y), batch,
                         _f(op, F_H), _f(op, F_WD), _f(op, F_CS), _f(op, F_OH), _f(op, F_OW),
                         _f(op, F_KH), _f(op, F_KW), _f(op, F_SH), _f(op, F_SW), _f(op, F_PT), _f(op, F_PL), act, lo, hi, tid, nth)
    elif code == OP_ADD:
        add(_buf(op, table, F_X), _buf(op, table, F_Z), _buf(op, table, F_Y), batch * _f(op, F_SIZE), act, lo, hi, tid, nth)
    elif code == OP_ACT:
        activation(_buf(op, table, F_X), _buf(op, table, F_Y), batch * _f(op, F_SIZE), act, lo, hi, tid, nth)
    elif code == OP_MAXPOOL:
        max_pool(_buf(op, table, F_X), _buf(op, table, F_Y), batch, _f(op, F_H), _f(op, F_WD), _f(op, F_CS), _f(op, F_OH), _f(op, F_OW),
                 _f(op, F_KH), _f(op, F_KW), _f(op, F_SH), _f(op, F_SW), _f(op, F_PT), _f(op, F_PL), tid, nth)
    elif code == OP_GAP:
        global_avg_pool(_buf(op, table, F_X), _buf(op, table, F_Y), batch, _f(op, F_H) * _f(op, F_WD), _f(op, F_CS), tid, nth)
    elif code == OP_GEMM:
        gemm(_buf(op, table, F_X), _buf(op, table, F_W), _buf(op, table, F_B), _buf(op, table, F_Y), batch, _f(op, F_C), _f(op, F_CS), _f(op, F_CO), act, lo, hi, tid, nth)
    elif code == OP_SOFTMAX:
        softmax(_buf(op, table, F_X), _buf(op, table, F_Y), batch, _f(op, F_CLASSES), _f(op, F_CS), tid, nth)
    elif code == OP_NCHW_TO_NHWC:
        nchw_to_nhwc(_buf(op, table, F_X), _buf(op, table, F_Y), batch, _f(op, F_C), _f(op, F_H) * _f(op, F_WD), _f(op, F_CS), tid, nth)
    elif code == OP_NHWC_TO_NCHW:
        nhwc_to_nchw(_buf(op, table, F_X), _buf(op, table, F_Y), batch, _f(op, F_C), _f(op, F_H) * _f(op, F_WD), _f(op, F_CS), tid, nth)
    else:
        raise Error("unknown operator code " + String(code))


def run_plan(ctrl: Int):
    """Compute the plan with whichever threads are running: each claims the next chunk of the current operator;
    the one finishing its last chunk moves everyone to the next operator. A thread the OS has descheduled
    holds up at most the chunk it is in, never the others (the machine may be shared)."""
    var plan = aload(slot(ctrl, C_PLAN))
    var nops = aload(slot(ctrl, C_NOPS))
    var table = iptr(aload(slot(ctrl, C_TABLE)))
    var fp = fptr(aload(slot(ctrl, C_FPARAMS)))
    var batch = aload(slot(ctrl, C_BATCH))
    var chunks = aload(slot(ctrl, C_CHUNKS))
    var counters = aload(slot(ctrl, C_COUNTERS))
    var op = aload(slot(ctrl, C_OP))
    var spins = 0
    while op < nops:
        var c = aadd(iptr(counters + op * 128), 1)
        if c < chunks:
            try:
                run_op(iptr(plan + op * OPW * 8), table, fp, op, batch, c, chunks)
            except:
                Atomic[Int64].store(slot(ctrl, C_ERR), Int64(op + 1))
            if aadd(iptr(counters + op * 128 + 64), 1) + 1 == chunks:
                Atomic[Int64].store(slot(ctrl, C_OP), Int64(op + 1))
        else:
            while aload(slot(ctrl, C_OP)) == op:
                relax(spins)
                spins += 1
        op = aload(slot(ctrl, C_OP))


def _futex(addr: Int, op: Int, val: Int):
    _ = external_call["syscall", Int](SYS_FUTEX, addr, op, val, 0, 0, 0)


def worker(ctrl: Int) -> Int:
    var gen = slot(ctrl, C_GEN)
    var seen = aload(gen)
    _ = aadd(slot(ctrl, C_STARTED), 1)
    while True:
        var spins = 0
        while aload(gen) == seen:
            spins += 1
            if spins > SPINS_BEFORE_SLEEP:
                _futex(ctrl + C_GEN * 8, FUTEX_WAIT_PRIVATE, seen & 0xFFFFFFFF)
        seen = aload(gen)
        if aload(slot(ctrl, C_STOP)) != 0:
            break
        run_plan(ctrl)
        _ = aadd(slot(ctrl, C_DONE), 1)
    _ = aadd(slot(ctrl, C_ALIVE), -1)
    return 0


def start(ctrl: Int) -> Int:
    """Start nthreads - 1 workers; returns once all have registered (so none misses the first batch)."""
    var workers = aload(slot(ctrl, C_NTHREADS)) - 1
    for _ in range(workers):
        var handle: UInt64 = 0
        _ = aadd(slot(ctrl, C_ALIVE), 1)
        var f = worker
        var rc = external_call["pthread_create", Int32](Pointer(to=handle), Int(0), f, ctrl)
        if rc != 0:
            _ = aadd(slot(ctrl, C_ALIVE), -1)
            return Int(rc)
        _ = external_call["pthread_detach", Int32](handle)
    var spins = 0
    while aload(slot(ctrl, C_STARTED)) < workers:
        relax(spins)
        spins += 1
    return 0


def forward(ctrl: Int) raises:
    """Run the plan once over the batch set in the control block, on every thread of the engine."""
    var nth = aload(slot(ctrl, C_NTHREADS))
    var counters = aload(slot(ctrl, C_COUNTERS))
    for i in range(aload(slot(ctrl, C_NOPS)) * 16):
        iptr(counters).unsafe_store(i, Int64(0))
    Atomic[Int64].store(slot(ctrl, C_OP), 0)
    Atomic[Int64].store(slot(ctrl, C_ERR), 0)
    Atomic[Int64].store(slot(ctrl, C_DONE), 0)
    if nth > 1:
        _ = aadd(slot(ctrl, C_GEN), 1)
        _futex(ctrl + C_GEN * 8, FUTEX_WAKE_PRIVATE, 0x7FFFFFFF)
    run_plan(ctrl)
    var spins = 0
    while aload(slot(ctrl, C_DONE)) < nth - 1:  # the counters are reset next time: wait for every worker
        relax(spins)
        spins += 1
    var failed = aload(slot(ctrl, C_ERR))
    if failed:
        raise Error("operator " + String(failed - 1) + " of the plan failed (unknown operator code?)")


def stop(ctrl: Int):
    """Stop the workers and wait until they have left (the control block may then be freed)."""
    Atomic[Int64].store(slot(ctrl, C_STOP), 1)
    _ = aadd(slot(ctrl, C_GEN), 1)
    _futex(ctrl + C_GEN * 8, FUTEX_WAKE_PRIVATE, 0x7FFFFFFF)
    var spins = 0
    while aload(slot(ctrl, C_ALIVE)) > 0:
        relax(spins)
        spins += 1
