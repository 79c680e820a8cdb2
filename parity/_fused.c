/* parity._fused: max |a - b|, max |a| and max |b| of two float arrays in one pass.
 *
 * Why C: a compare measures every module's output on the torch thread while Lucid's
 * forward runs on the other (parity._side_by_side). numpy needs a subtraction into a
 * scratch block and four reductions per block, each a Python call that takes the GIL
 * Lucid's forward needs, and the two sides rarely share a memory layout (Lucid's
 * convolutions hand back NHWC memory seen as NCHW). Here one call reads each input once,
 * without the GIL; where the layouts differ, in cache-sized tiles, transposing one side in
 * registers.
 *
 * C99 with GCC/Clang vector extensions (16-byte vectors: SSE2 and NEON, the baselines of
 * x86-64 and arm64), no numpy headers: the inputs come in through the buffer protocol.
 * The kernels, one set per element type, are in _fused_kernels.h. The build is optional
 * (pyproject.toml); without it parity._metrics uses its numpy path, which gives the same
 * numbers bit for bit.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define MAX_DIMS 64
#define TILE 32 /* elements a side: a tile of each input is 4 KiB in float32, 8 KiB in float64 */

/* The three maxima, and whether a difference was NaN (a NaN, or inf - inf, on a side). */
typedef struct {
    double diff, a, b;
    int nan;
} Maxima;

/* Layout of one comparison after merging axes: ``ndim`` axes in a's memory order (slowest
 * first, a's fastest last), strides in elements. */
typedef struct {
    int ndim;
    Py_ssize_t shape[MAX_DIMS], sa[MAX_DIMS], sb[MAX_DIMS];
} Layout;

/* Lanes picked from two vectors (indices past the first vector's lanes pick the second's). */
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define SHUFFLE(x, y, ...) __builtin_shufflevector(x, y, __VA_ARGS__)
#endif
#endif
#ifndef SHUFFLE /* GCC before 12 */
#define SHUFFLE(x, y, ...) __builtin_shuffle(x, y, (NAME(bits)){__VA_ARGS__})
#endif

#define T float
#define I int32_t
#define MAGNITUDE 0x7fffffff
#define LANES 4
#define SUFFIX f32
#include "_fused_kernels.h"
#undef T
#undef I
#undef MAGNITUDE
#undef LANES
#undef SUFFIX

#define T double
#define I int64_t
#define MAGNITUDE 0x7fffffffffffffffLL
#define LANES 2
#define SUFFIX f64
#include "_fused_kernels.h"
#undef T
#undef I
#undef MAGNITUDE
#undef LANES
#undef SUFFIX

/* Axes of length 1 dropped, the rest sorted by a's strides (slowest first), and
 * neighbours merged where both arrays step through them as one axis. Returns 0 when an
 * axis is empty (nothing to compare). */
static int make_layout(const Py_buffer *a, const Py_buffer *b, Layout *l)
{
    l->ndim = 0;
    for (int k = 0; k < a->ndim; k++) {
        if (a->shape[k] == 0) return 0;
        if (a->shape[k] == 1) continue;
        int at = l->ndim++;
        Py_ssize_t sa = a->strides[k] / a->itemsize, sb = b->strides[k] / b->itemsize;
        while (at > 0 && Py_ABS(l->sa[at - 1]) < Py_ABS(sa)) { /* insertion sort */
            l->shape[at] = l->shape[at - 1], l->sa[at] = l->sa[at - 1], l->sb[at] = l->sb[at - 1];
            at--;
        }
        l->shape[at] = a->shape[k], l->sa[at] = sa, l->sb[at] = sb;
    }
    int merged = 0;
    for (int k = 0; k < l->ndim; k++) {
        int last = merged - 1;
        if (merged > 0 && l->sa[last] == l->sa[k] * l->shape[k] && l->sb[last] == l->sb[k] * l->shape[k]) {
            l->shape[last] *= l->shape[k];
            l->sa[last] = l->sa[k], l->sb[last] = l->sb[k];
        } else {
            l->shape[merged] = l->shape[k], l->sa[merged] = l->sa[k], l->sb[merged] = l->sb[k];
            merged++;
        }
    }
    l->ndim = merged;
    if (l->ndim == 0) { /* a single element */
        l->ndim = 1, l->shape[0] = 1, l->sa[0] = 1, l->sb[0] = 1;
    }
    return 1;
}

/* Whether the buffer holds native float32 ("f") or float64 ("d"), aligned, at whole-element
 * strides. Exporters may leave strides NULL for C order (ctypes does): not taken. */
static int usable(const Py_buffer *view, char kind)
{
    if ((view->ndim > 0 && view->strides == NULL) || (uintptr_t)view->buf % view->itemsize != 0) return 0;
    const char *format = view->format;
    if (format[0] == '@' || format[0] == '=' || (format[0] == '<' && PY_LITTLE_ENDIAN) ||
        (format[0] == '>' && PY_BIG_ENDIAN))
        format++;
    if (format[0] != kind || format[1] != '\0' || view->ndim > MAX_DIMS) return 0;
    for (int k = 0; k < view->ndim; k++)
        if (view->strides[k] % view->itemsize != 0) return 0;
    return 1;
}

PyDoc_STRVAR(max_errors_doc,
             "max_errors(a, b) -> (max |a - b|, max |a|, max |b|, nan) or None\n\n"
             "Two arrays of one shape and one dtype, native float32 or float64, any strides\n"
             "(buffer protocol). nan is True when a difference was NaN (then the maxima mean\n"
             "nothing). None when the inputs are anything else: the caller falls back.");

static PyObject *max_errors(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "max_errors takes two arrays");
        return NULL;
    }
    Py_buffer a, b;
    if (PyObject_GetBuffer(args[0], &a, PyBUF_RECORDS_RO) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &b, PyBUF_RECORDS_RO) < 0) {
        PyBuffer_Release(&a);
        return NULL;
    }
    PyObject *result = Py_None;
    char kind = a.itemsize == 4 ? 'f' : a.itemsize == 8 ? 'd' : 0;
    int same = kind && a.ndim == b.ndim && a.itemsize == b.itemsize && usable(&a, kind) && usable(&b, kind);
    for (int k = 0; same && k < a.ndim; k++) same = a.shape[k] == b.shape[k];
    if (same) {
        Maxima m = {0.0, 0.0, 0.0, 0};
        Layout layout;
        Py_BEGIN_ALLOW_THREADS
        if (make_layout(&a, &b, &layout)) {
            if (kind == 'f')
                compare_f32(a.buf, b.buf, &layout, &m);
            else
                compare_f64(a.buf, b.buf, &layout, &m);
        }
        Py_END_ALLOW_THREADS
        result = Py_BuildValue("(dddO)", m.diff, m.a, m.b, m.nan ? Py_True : Py_False);
    } else {
        Py_INCREF(result);
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return result;
}

static PyMethodDef methods[] = {
    {"max_errors", (PyCFunction)(void (*)(void))max_errors, METH_FASTCALL, max_errors_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "parity._fused",
    .m_doc = "One-pass error maxima of two float arrays.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fused(void) { return PyModule_Create(&module); }
