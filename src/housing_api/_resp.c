/* A Redis command's arguments packed as one RESP array of bulk strings, in one pass.
 *
 * pack(args) packs a tuple whose items are exactly str (UTF-8), bytes or int (decimal) into
 * "*<n>\r\n" and "$<len>\r\n<arg>\r\n" per argument, the bytes redis-py and hiredis send for
 * them, and returns None for anything else (another type, an int past 64 bits, a str that does not
 * encode), which the caller then packs the way it did before. hiredis' own packer formats every
 * length with sprintf and copies each argument into a growing string; a micro-batch's MGET and
 * EVALSHA carry one or two arguments per row, so that was most of the packing's cost.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#define MAX_DIGITS 20 /* of a Py_ssize_t or an int64, without the sign */

/* n's decimal digits at w, returning the end. */
static char *write_size(char *w, size_t n)
{
    char digits[MAX_DIGITS];
    int k = 0;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (k)
        *w++ = digits[--k];
    return w;
}

static size_t size_width(size_t n)
{
    size_t k = 1;
    while (n >= 10) {
        n /= 10;
        k++;
    }
    return k;
}

/* One argument's bytes: a pointer into the object, or into `text` for an int. 0 when the
 * argument is not one pack() takes. */
static int arg_bytes(PyObject *arg, const char **data, Py_ssize_t *len, char *text)
{
    if (PyBytes_CheckExact(arg)) {
        *data = PyBytes_AS_STRING(arg);
        *len = PyBytes_GET_SIZE(arg);
        return 1;
    }
    if (PyUnicode_CheckExact(arg)) {
        *data = PyUnicode_AsUTF8AndSize(arg, len);
        if (*data == NULL) {
            PyErr_Clear();
            return 0;
        }
        return 1;
    }
    if (PyLong_CheckExact(arg)) {
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(arg, &overflow);
        if (overflow || (value == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        char *w = text;
        unsigned long long magnitude = (unsigned long long)value;
        if (value < 0) {
            *w++ = '-';
            magnitude = 0ULL - magnitude;
        }
        w = write_size(w, (size_t)magnitude);
        *data = text;
        *len = w - text;
        return 1;
    }
    return 0;
}

PyDoc_STRVAR(pack_doc, "pack(args, /) -> bytes | None\n\n"
                       "The command as one RESP array of bulk strings; None unless every item is a str, bytes or int.");

static PyObject *pack(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *command;
    if (!PyArg_ParseTuple(args, "O!:pack", &PyTuple_Type, &command))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(command);
    char text[MAX_DIGITS + 2];
    size_t total = 1 + size_width((size_t)n) + 2;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *data;
        Py_ssize_t len;
        if (!arg_bytes(PyTuple_GET_ITEM(command, i), &data, &len, text))
            Py_RETURN_NONE;
        total += 1 + size_width((size_t)len) + 2 + (size_t)len + 2;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (out == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(out);
    *w++ = '*';
    w = write_size(w, (size_t)n);
    *w++ = '\r';
    *w++ = '\n';
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *data;
        Py_ssize_t len;
        arg_bytes(PyTuple_GET_ITEM(command, i), &data, &len, text); /* took it above: the same again */
        *w++ = '$';
        w = write_size(w, (size_t)len);
        *w++ = '\r';
        *w++ = '\n';
        memcpy(w, data, (size_t)len);
        w += len;
        *w++ = '\r';
        *w++ = '\n';
    }
    return out;
}

static PyMethodDef methods[] = {
    {"pack", pack, METH_VARARGS, pack_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "housing_api._resp",
    .m_doc = "Native part of housing_api.cache's command packing; use that module, not this one.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__resp(void) { return PyModuleDef_Init(&module_def); }
