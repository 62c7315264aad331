/* The Redis keys of a micro-batch's rows in one call: namespace + hex(BLAKE2b-128(row)) each.
 *
 * keys(namespace, rows) gives, for every row (bytes of at most one BLAKE2b block, 128 bytes; a
 * canonical row is 64), the string keys.py's `namespace + row_digest(row)` gives:
 * hashlib.blake2b(row, digest_size=16).hexdigest(), unkeyed, no salt or personalisation. A row
 * fits one block, so each digest is one compression (RFC 7693, section 3.2, with the parameter
 * block of a 16-byte digest); hashlib's per-call object, update, final and hex string cost several
 * times that. tests/unit/test_keys.py holds the keys to hashlib's on random rows of every length.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define BLOCK 128
#define DIGEST 16

static const uint64_t IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t rotr(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#define G(a, b, c, d, x, y)                                                                                    \
    do {                                                                                                       \
        v[a] = v[a] + v[b] + (x);                                                                              \
        v[d] = rotr(v[d] ^ v[a], 32);                                                                          \
        v[c] = v[c] + v[d];                                                                                    \
        v[b] = rotr(v[b] ^ v[c], 24);                                                                          \
        v[a] = v[a] + v[b] + (y);                                                                              \
        v[d] = rotr(v[d] ^ v[a], 16);                                                                          \
        v[c] = v[c] + v[d];                                                                                    \
        v[b] = rotr(v[b] ^ v[c], 63);                                                                          \
    } while (0)

/* BLAKE2b with a 16-byte digest of a message of at most one block: its one, final compression. */
static void digest(const uint8_t *data, size_t len, uint8_t out[DIGEST])
{
    uint8_t block[BLOCK] = {0};
    memcpy(block, data, len);
    uint64_t m[16], v[16], h[8];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(m, block, sizeof m); /* the words are little-endian: as they lie in memory */
#else
    for (int i = 0; i < 16; i++)
        m[i] = load64(block + 8 * i);
#endif
    memcpy(h, IV, sizeof h);
    h[0] ^= 0x01010000ULL ^ DIGEST; /* depth 1, fanout 1, no key, the digest's length */
    memcpy(v, h, sizeof h);
    memcpy(v + 8, IV, sizeof IV);
    v[12] ^= (uint64_t)len; /* the bytes hashed so far: all of them */
    v[14] = ~v[14];         /* the last block */
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = SIGMA[r];
        G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < DIGEST / 8; i++) {
        uint64_t word = h[i] ^ v[i] ^ v[i + 8];
        for (int j = 0; j < 8; j++)
            out[8 * i + j] = (uint8_t)(word >> (8 * j));
    }
}

/* namespace followed by the row's digest in lower-case hex. */
static PyObject *row_key(PyObject *namespace, const char *ns, Py_ssize_t ns_len, PyObject *row)
{
    static const char HEX[] = "0123456789abcdef";
    uint8_t d[DIGEST];
    digest((const uint8_t *)PyBytes_AS_STRING(row), (size_t)PyBytes_GET_SIZE(row), d);
    char hex[2 * DIGEST];
    for (int i = 0; i < DIGEST; i++) {
        hex[2 * i] = HEX[d[i] >> 4];
        hex[2 * i + 1] = HEX[d[i] & 15];
    }
    if (ns == NULL) { /* a namespace that is not ASCII: concatenated as Python would */
        PyObject *tail = PyUnicode_FromStringAndSize(hex, 2 * DIGEST);
        if (tail == NULL)
            return NULL;
        PyObject *key = PyUnicode_Concat(namespace, tail);
        Py_DECREF(tail);
        return key;
    }
    PyObject *key = PyUnicode_New(ns_len + 2 * DIGEST, 127);
    if (key == NULL)
        return NULL;
    char *w = (char *)PyUnicode_DATA(key);
    memcpy(w, ns, (size_t)ns_len);
    memcpy(w + ns_len, hex, 2 * DIGEST);
    return key;
}

PyDoc_STRVAR(keys_doc, "keys(namespace, rows, /) -> list[str]\n\n"
                       "namespace + blake2b(row, digest_size=16).hexdigest() for each row (bytes of at most 128).");

static PyObject *keys(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *namespace, *rows;
    if (!PyArg_ParseTuple(args, "UO:keys", &namespace, &rows))
        return NULL;
    PyObject *seq = PySequence_Fast(rows, "rows must be a sequence of bytes");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), ns_len = 0;
    const char *ns = PyUnicode_IS_ASCII(namespace) ? (const char *)PyUnicode_DATA(namespace) : NULL;
    if (ns != NULL)
        ns_len = PyUnicode_GET_LENGTH(namespace);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *row = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(row) || PyBytes_GET_SIZE(row) > BLOCK) {
            PyErr_SetString(PyExc_ValueError, "each row must be bytes of at most 128");
            Py_CLEAR(out);
            break;
        }
        PyObject *key = row_key(namespace, ns, ns_len, row);
        if (key == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, key);
    }
    Py_DECREF(seq);
    return out;
}

static PyMethodDef methods[] = {
    {"keys", keys, METH_VARARGS, keys_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "housing_api._rowkeys",
    .m_doc = "Native part of housing_api.keys; use that module, not this one.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__rowkeys(void) { return PyModuleDef_Init(&module_def); }
