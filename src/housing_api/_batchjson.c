/* POST /predict's body straight into float64 rows, and those rows back into the answer's `inputs`.
 *
 * decode(body, max_rows, names, lower, upper) reads exactly one shape of body, the one every
 * client sends: a JSON array of 1..max_rows objects, each holding the eight feature names once
 * (no escapes in them), each with a JSON number, and nothing else. It returns the rows as bytes
 * (n x 8 little-endian float64 in `names` order, -0.0 folded into 0.0) when every value is within
 * [lower, upper] of its column, and None for anything else: the caller then runs the validator,
 * which answers the body (its rows, or the 422 naming the first bad row and field). So this
 * parser only has to be right about what it accepts; it never writes an error.
 *
 * Numbers follow RFC 8259's grammar exactly (no '+', leading zeros, '.5', '1.', NaN, Infinity)
 * and become the float64 nearest the decimal, which is what pydantic-core gives for a JSON number
 * (an integer too: the nearest float64 of the integer): by one exact multiplication or division
 * when that is exact (at most 15 significant digits, a power of ten up to 22), else by
 * PyOS_string_to_double, Python's correctly rounded, locale-independent conversion. Whitespace is
 * JSON's four bytes.
 *
 * inputs(numbers) rewrites orjson's dump of an (n, 8) float64 array, "[[a,b,...],[...]]", into
 * the JSON orjson writes for the same rows as dicts, '[{"MedInc":a,"HouseAge":b,...},...]', so
 * that the numbers are formatted by orjson alone.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define N_FEATURES 8
#define MAX_NUMBER 400 /* longer numbers are left to the validator */

static const char *const NAMES[N_FEATURES] = {"MedInc",     "HouseAge", "AveRooms", "AveBedrms",
                                              "Population", "AveOccup", "Latitude", "Longitude"};
static size_t LENGTHS[N_FEATURES]; /* strlen of each name, set once when the module is loaded */
#define KEY_SLOT 16                  /* room for '"' name '"' ':' of every name */
static char KEYS[N_FEATURES][KEY_SLOT]; /* that text, set with LENGTHS */
static size_t KEY_LENGTHS[N_FEATURES];

typedef struct {
    const char *p;
    const char *end;
} Cursor;

static inline void skip_ws(Cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static inline int eat(Cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

static inline int is_digit(const Cursor *c) { return c->p < c->end && *c->p >= '0' && *c->p <= '9'; }

static void digits(Cursor *c)
{
    while (is_digit(c))
        c->p++;
}

/* The column of the key at the cursor (a '"' was eaten), or -1. `expected` is tried first: the
 * column after the previous key's, which it is whenever the keys come in FEATURES order. */
static int key(Cursor *c, int expected)
{
    const char *start = c->p;
    while (c->p < c->end && *c->p != '"') {
        if (*c->p == '\\' || (unsigned char)*c->p < 0x20 || (unsigned char)*c->p >= 0x80)
            return -1;
        c->p++;
    }
    if (c->p >= c->end)
        return -1;
    size_t len = (size_t)(c->p - start);
    c->p++; /* the closing quote */
    if (LENGTHS[expected] == len && memcmp(NAMES[expected], start, len) == 0)
        return expected;
    for (int i = 0; i < N_FEATURES; i++)
        if (LENGTHS[i] == len && memcmp(NAMES[i], start, len) == 0)
            return i;
    return -1;
}

/* The number's text through Python's own correctly rounded conversion. */
static int slow(const char *start, size_t len, double *out)
{
    if (len > MAX_NUMBER)
        return 0;
    char text[MAX_NUMBER + 1];
    memcpy(text, start, len);
    text[len] = '\0';
    char *end = NULL;
    double value = PyOS_string_to_double(text, &end, NULL); /* NULL: overflow gives +-inf, no error */
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (end != text + len)
        return 0;
    *out = value;
    return 1;
}

/* Powers of ten that are exact in a double. */
static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

typedef struct {
    uint64_t mantissa; /* the digits, leading zeros dropped, while there are at most 19 */
    int digits;        /* how many significant digits there were */
    int exponent;      /* the value is mantissa x 10^exponent (when digits <= 19) */
} Decimal;

static void collect(Cursor *c, Decimal *d, int fraction)
{
    for (; is_digit(c); c->p++) {
        if (d->digits == 0 && *c->p == '0') {
            d->exponent -= fraction; /* a leading zero: only its place counts */
            continue;
        }
        if (d->digits < 19) {
            d->mantissa = d->mantissa * 10 + (uint64_t)(*c->p - '0');
            d->exponent -= fraction;
        } else {
            d->exponent += !fraction; /* not kept (the slow path decides past 15 digits anyway) */
        }
        d->digits++;
    }
}

/* The float64 nearest the decimal when one exact multiplication or division gives it (Clinger's
 * fast path: both operands exact, one rounding); 0 when the slow path must decide. */
static int exact(const Decimal *d, int negative, double *out)
{
    if (d->digits == 0) {
        *out = negative ? -0.0 : 0.0;
        return 1;
    }
    if (d->digits > 15 || d->exponent < -22 || d->exponent > 22)
        return 0;
    double m = (double)d->mantissa;
    *out = d->exponent >= 0 ? m * POW10[d->exponent] : m / POW10[-d->exponent];
    if (negative)
        *out = -*out;
    return 1;
}

/* A JSON number at the cursor into *out; 0 when the text is not exactly one. */
static int number(Cursor *c, double *out)
{
    const char *start = c->p;
    Decimal d = {0, 0, 0};
    int negative = c->p < c->end && *c->p == '-';
    c->p += negative;
    if (!is_digit(c))
        return 0;
    if (*c->p == '0')
        c->p++;
    else
        collect(c, &d, 0);
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (!is_digit(c))
            return 0;
        collect(c, &d, 1);
    }
    int fast = 1;
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        int sign = 1, e = 0;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            sign = *c->p++ == '-' ? -1 : 1;
        if (!is_digit(c))
            return 0;
        for (; is_digit(c); c->p++)
            if (e < 10000)
                e = e * 10 + (*c->p - '0');
        fast = e < 10000;
        d.exponent += sign * e;
    }
    double value;
    if (!(fast && exact(&d, negative, &value)) && !slow(start, (size_t)(c->p - start), &value))
        return 0;
    *out = value + 0.0; /* -0.0 + 0.0 == 0.0: the canonical row (keys.py) */
    return 1;
}

/* One row's object into row[0..7]; 0 unless it holds exactly the eight features, each once. */
static int row_object(Cursor *c, double *row, const double *lower, const double *upper)
{
    unsigned seen = 0;
    int col = -1;
    if (!eat(c, '{'))
        return 0;
    for (;;) {
        if (!eat(c, '"'))
            return 0;
        col = key(c, (col + 1) % N_FEATURES);
        if (col < 0 || (seen & (1u << col)) || !eat(c, ':'))
            return 0;
        skip_ws(c);
        double value;
        if (!number(c, &value) || !(value >= lower[col] && value <= upper[col]))
            return 0;
        row[col] = value;
        seen |= 1u << col;
        if (eat(c, '}'))
            return seen == (1u << N_FEATURES) - 1;
        if (!eat(c, ','))
            return 0;
    }
}

static PyObject *parse(Cursor *c, Py_ssize_t max_rows, const double *lower, const double *upper)
{
    Py_ssize_t n = 0, capacity = 16;
    double *rows = PyMem_Malloc(sizeof(double) * N_FEATURES * capacity);
    if (rows == NULL)
        return PyErr_NoMemory();
    int ok = eat(c, '[');
    while (ok) {
        if (n == max_rows) {
            ok = 0;
            break;
        }
        if (n == capacity) {
            capacity *= 2;
            double *grown = PyMem_Realloc(rows, sizeof(double) * N_FEATURES * capacity);
            if (grown == NULL) {
                PyMem_Free(rows);
                return PyErr_NoMemory();
            }
            rows = grown;
        }
        ok = row_object(c, rows + N_FEATURES * n, lower, upper);
        n++;
        if (ok && eat(c, ']')) {
            skip_ws(c);
            ok = c->p == c->end;
            break;
        }
        ok = ok && eat(c, ',');
    }
    PyObject *result = ok ? PyBytes_FromStringAndSize((const char *)rows, (Py_ssize_t)sizeof(double) * N_FEATURES * n)
                          : Py_NewRef(Py_None);
    PyMem_Free(rows);
    return result;
}

PyDoc_STRVAR(decode_doc, "decode(body, max_rows, lower, upper, /) -> bytes | None\n\n"
                         "The rows of a plain, valid batch as n x 8 float64; None for any other body.");

static PyObject *decode(PyObject *module, PyObject *args)
{
    Py_buffer body, lower, upper;
    Py_ssize_t max_rows;
    if (!PyArg_ParseTuple(args, "y*ny*y*:decode", &body, &max_rows, &lower, &upper))
        return NULL;
    PyObject *result = NULL;
    if (lower.len != sizeof(double) * N_FEATURES || upper.len != sizeof(double) * N_FEATURES) {
        PyErr_SetString(PyExc_ValueError, "lower and upper hold one float64 per feature");
    } else {
        Cursor c = {(const char *)body.buf, (const char *)body.buf + body.len};
        result = parse(&c, max_rows, (const double *)lower.buf, (const double *)upper.buf);
    }
    PyBuffer_Release(&body);
    PyBuffer_Release(&lower);
    PyBuffer_Release(&upper);
    return result;
}

PyDoc_STRVAR(inputs_doc, "inputs(numbers, /) -> bytes\n\n"
                         "orjson's '[[a,...],...]' of an (n, 8) array as the same rows' objects.");

static PyObject *inputs(PyObject *module, PyObject *args)
{
    const char *in;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "y#:inputs", &in, &len))
        return NULL;
    if (len < 4 || in[0] != '[' || in[1] != '[' || in[len - 2] != ']' || in[len - 1] != ']') {
        PyErr_SetString(PyExc_ValueError, "expected orjson's dump of a two-dimensional array");
        return NULL;
    }
    size_t keys = 0;
    for (int i = 0; i < N_FEATURES; i++)
        keys += KEY_LENGTHS[i] + 1; /* "name": and a separator */
    Py_ssize_t rows = 0;
    for (Py_ssize_t i = 0; i < len; i++)
        rows += in[i] == ']';
    rows -= 1; /* the outer array's */
    /* KEY_SLOT bytes of slack: each key is copied as a whole slot, of which only its length counts. */
    PyObject *out = PyBytes_FromStringAndSize(NULL, len + (Py_ssize_t)keys * rows + 2 + KEY_SLOT);
    if (out == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(out), *start = w;
    const char *p = in + 1, *end = in + len - 1; /* inside the outer brackets; *end is ']' */
    *w++ = '[';
    int col = 0;
    while (p < end) {
        char ch = *p;
        if (ch == '[' || (ch == ',' && p[-1] != ']')) {
            *w++ = ch == '[' ? '{' : ',';
            col = ch == '[' ? 0 : col + 1;
            if (col >= N_FEATURES) {
                Py_DECREF(out);
                PyErr_SetString(PyExc_ValueError, "a row has more than eight values");
                return NULL;
            }
            memcpy(w, KEYS[col], KEY_SLOT);
            w += KEY_LENGTHS[col];
            p++;
        } else if (ch == ']') {
            *w++ = '}';
            p++;
        } else if (ch == ',') {
            *w++ = ','; /* between rows */
            p++;
        } else { /* a number, up to the ',' or ']' after it (there is one: *end is ']') */
            while (*p != ',' && *p != ']')
                *w++ = *p++;
        }
    }
    *w++ = ']';
    if (_PyBytes_Resize(&out, w - start) < 0)
        return NULL;
    return out;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS, decode_doc},
    {"inputs", inputs, METH_VARARGS, inputs_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "housing_api._batchjson",
    .m_doc = "Native part of housing_api.batch_json; use that module, not this one.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__batchjson(void)
{
    for (int i = 0; i < N_FEATURES; i++) {
        LENGTHS[i] = strlen(NAMES[i]);
        KEY_LENGTHS[i] = (size_t)snprintf(KEYS[i], KEY_SLOT, "\"%s\":", NAMES[i]);
        if (KEY_LENGTHS[i] >= KEY_SLOT) {
            PyErr_SetString(PyExc_SystemError, "a feature name is too long for its key slot");
            return NULL;
        }
    }
    return PyModuleDef_Init(&module_def);
}
