/* The kernels of parity/_fused.c for one element type. Included once per type, with
 *   T       the element type (float, double)
 *   I       the signed integer of T's width (int32_t, int64_t)
 *   MAGNITUDE  an I with every bit but the sign set
 *   LANES   elements per 16-byte vector (4, 2)
 *   SUFFIX  appended to every name (f32, f64)
 * defined, and undefined again after.
 *
 * |x| is x's bits with the sign cleared. Non-negative floats order like those bits read as
 * signed integers, so the running maxima are integer maxima: no float compare that could
 * drop a NaN or need -ffast-math to vectorize. NaNs are flagged apart (e != e).
 */

#define CONCAT(name, suffix) name##_##suffix
#define EXPAND(name, suffix) CONCAT(name, suffix)
#define NAME(name) EXPAND(name, SUFFIX)

typedef T NAME(vector) __attribute__((vector_size(16)));
typedef I NAME(bits) __attribute__((vector_size(16)));

/* Running maxima, one per lane, folded into a Maxima once, at the end. */
typedef struct {
    NAME(bits) diff, a, b, nan;
} NAME(lanes);

static inline NAME(bits) NAME(vmax)(NAME(bits) x, NAME(bits) y)
{
    NAME(bits) greater = x > y;
    return (x & greater) | (y & ~greater);
}

static inline NAME(vector) NAME(load)(const T *at)
{
    NAME(vector) v;
    memcpy(&v, at, sizeof v); /* unaligned */
    return v;
}

/* One vector of a against the same elements of b. */
static inline void NAME(step)(NAME(vector) u, NAME(vector) v, NAME(lanes) *acc)
{
    const NAME(bits) magnitude = (NAME(bits)){0} + (I)MAGNITUDE;
    NAME(vector) e = u - v;
    acc->nan |= e != e;
    acc->diff = NAME(vmax)(acc->diff, (NAME(bits))e & magnitude);
    acc->a = NAME(vmax)(acc->a, (NAME(bits))u & magnitude);
    acc->b = NAME(vmax)(acc->b, (NAME(bits))v & magnitude);
}

static inline void NAME(fold)(T value, double *into)
{
    if (value > *into) *into = value;
}

/* One element; also the reference for what a vector step does. */
static inline void NAME(scalar)(T u, T v, Maxima *m)
{
    T e = u - v;
    m->nan |= e != e;
    NAME(fold)(e < 0 ? -e : e, &m->diff);
    NAME(fold)(u < 0 ? -u : u, &m->a);
    NAME(fold)(v < 0 ? -v : v, &m->b);
}

static void NAME(fold_lanes)(const NAME(lanes) *acc, Maxima *m)
{
    NAME(vector) diff, a, b;
    memcpy(&diff, &acc->diff, sizeof diff);
    memcpy(&a, &acc->a, sizeof a);
    memcpy(&b, &acc->b, sizeof b);
    for (int k = 0; k < LANES; k++) {
        NAME(fold)(diff[k], &m->diff);
        NAME(fold)(a[k], &m->a);
        NAME(fold)(b[k], &m->b);
        m->nan |= acc->nan[k] != 0;
    }
}

/* n contiguous elements of a and b. */
static void NAME(line)(const T *a, const T *b, Py_ssize_t n, NAME(lanes) *acc, Maxima *m)
{
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES) NAME(step)(NAME(load)(a + i), NAME(load)(b + i), acc);
    for (; i < n; i++) NAME(scalar)(a[i], b[i], m);
}

/* n elements at any strides (rare: a slice, a broadcast view). */
static void NAME(strided)(const T *a, Py_ssize_t sa, const T *b, Py_ssize_t sb, Py_ssize_t n, Maxima *m)
{
    for (Py_ssize_t i = 0; i < n; i++) NAME(scalar)(a[i * sa], b[i * sb], m);
}

/* LANES x LANES elements where a runs along x and b along y: b's rows (one per x, each
 * along y) transposed in registers into columns (one per y, each along x), like a's. */
static inline void NAME(square)(const T *a, Py_ssize_t a_y, const T *b, Py_ssize_t b_x, NAME(lanes) *acc)
{
#if LANES == 4
    NAME(vector) r0 = NAME(load)(b), r1 = NAME(load)(b + b_x);
    NAME(vector) r2 = NAME(load)(b + 2 * b_x), r3 = NAME(load)(b + 3 * b_x);
    NAME(vector) t0 = SHUFFLE(r0, r1, 0, 4, 1, 5), t1 = SHUFFLE(r0, r1, 2, 6, 3, 7);
    NAME(vector) t2 = SHUFFLE(r2, r3, 0, 4, 1, 5), t3 = SHUFFLE(r2, r3, 2, 6, 3, 7);
    NAME(step)(NAME(load)(a), SHUFFLE(t0, t2, 0, 1, 4, 5), acc);
    NAME(step)(NAME(load)(a + a_y), SHUFFLE(t0, t2, 2, 3, 6, 7), acc);
    NAME(step)(NAME(load)(a + 2 * a_y), SHUFFLE(t1, t3, 0, 1, 4, 5), acc);
    NAME(step)(NAME(load)(a + 3 * a_y), SHUFFLE(t1, t3, 2, 3, 6, 7), acc);
#elif LANES == 2
    NAME(vector) r0 = NAME(load)(b), r1 = NAME(load)(b + b_x);
    NAME(step)(NAME(load)(a), SHUFFLE(r0, r1, 0, 2), acc);
    NAME(step)(NAME(load)(a + a_y), SHUFFLE(r0, r1, 1, 3), acc);
#else
#error "LANES must be 4 or 2"
#endif
}

/* A plane where a is contiguous along x (n_x long, next y at a_y) and b along y (n_y long,
 * next x at b_x), in TILE x TILE tiles that stay in the L1 cache; squares of LANES x LANES
 * inside, single elements on the tiles' ragged edges. */
static void NAME(plane)(const T *a, const T *b, Py_ssize_t n_x, Py_ssize_t n_y, Py_ssize_t a_y,
                        Py_ssize_t b_x, NAME(lanes) *acc, Maxima *m)
{
    for (Py_ssize_t y0 = 0; y0 < n_y; y0 += TILE) {
        Py_ssize_t ty = n_y - y0 < TILE ? n_y - y0 : TILE, full_y = ty - ty % LANES;
        for (Py_ssize_t x0 = 0; x0 < n_x; x0 += TILE) {
            Py_ssize_t tx = n_x - x0 < TILE ? n_x - x0 : TILE, full_x = tx - tx % LANES;
            const T *ta = a + y0 * a_y + x0, *tb = b + x0 * b_x + y0; /* the tile's corner */
            for (Py_ssize_t y = 0; y < full_y; y += LANES)
                for (Py_ssize_t x = 0; x < full_x; x += LANES)
                    NAME(square)(ta + y * a_y + x, a_y, tb + x * b_x + y, b_x, acc);
            for (Py_ssize_t y = 0; y < ty; y++) /* columns past the last square: every y */
                NAME(strided)(ta + y * a_y + full_x, 1, tb + full_x * b_x + y, b_x, tx - full_x, m);
            for (Py_ssize_t y = full_y; y < ty; y++) /* rows past the last square */
                NAME(strided)(ta + y * a_y, 1, tb + y, b_x, full_x, m);
        }
    }
}

/* The whole comparison: the last axis of the layout is a's fastest; a plane when b's
 * fastest is another, lines when it is the same; a counter over the remaining axes. */
static void NAME(compare)(const T *a, const T *b, const Layout *l, Maxima *m)
{
    int x = l->ndim - 1, y = x;
    for (int k = 0; k < l->ndim; k++)
        if (Py_ABS(l->sb[k]) < Py_ABS(l->sb[y])) y = k;
    int plane = y != x && l->sa[x] == 1 && l->sb[y] == 1;
    Py_ssize_t index[MAX_DIMS] = {0};
    NAME(lanes) acc = {{0}, {0}, {0}, {0}};
    for (;;) {
        const T *pa = a, *pb = b;
        for (int k = 0; k < l->ndim; k++) pa += index[k] * l->sa[k], pb += index[k] * l->sb[k];
        if (plane)
            NAME(plane)(pa, pb, l->shape[x], l->shape[y], l->sa[y], l->sb[x], &acc, m);
        else if (l->sa[x] == 1 && l->sb[x] == 1)
            NAME(line)(pa, pb, l->shape[x], &acc, m);
        else
            NAME(strided)(pa, l->sa[x], pb, l->sb[x], l->shape[x], m);
        int k = l->ndim - 1; /* the next index over the other axes, the last fastest */
        for (; k >= 0; k--) {
            if (k == x || (plane && k == y)) continue;
            if (++index[k] < l->shape[k]) break;
            index[k] = 0;
        }
        if (k < 0) break;
    }
    NAME(fold_lanes)(&acc, m);
}

#undef NAME
#undef EXPAND
#undef CONCAT
