/* The loader's fast path in C: usual records written straight onto the bulk bodies.

   `Writer.take_json` / `take_csv` go through a block of lines from a position on and write every line that is a
   usual record (the fast path of ingest.py, narrowed) onto its index's `Body`, exactly as the Python way would:
   the same action line and the same `_source` bytes. They stop at the first line they do not take and return its
   position; the Python way then decides that line (accepted, rejected or blank). A line is taken only when it is
   certainly valid, so the C code never has to say why a record is wrong: anything unusual (escapes, unknown keys,
   other datetime forms, a day not given in `slots`) is left to Python. tests/unit/test_fastpath.py checks that
   what is taken is exactly what the Python way writes.

   Without a C compiler the module is simply missing and the loader takes the Python way (load.py).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define MAX_PAGE_CHARS 2048
#define MAX_USER_ID 2147483647LL
#define MAX_LINE_BYTES (1 << 20)
#define FIRST_CAPACITY (1 << 16)

/* ---------------------------------------------------------------------------------------------------------------
   Body: a bulk body being built, handed over as bytes without a copy. */

typedef struct {
    PyObject_HEAD
    PyObject *bytes; /* a bytes object written in place, `capacity` long; NULL when empty */
    Py_ssize_t size;
    Py_ssize_t capacity;
    Py_ssize_t docs;
} Body;

static int body_reserve(Body *self, Py_ssize_t more) {
    Py_ssize_t needed = self->size + more;
    if (needed <= self->capacity) return 0;
    Py_ssize_t capacity = self->capacity ? self->capacity : FIRST_CAPACITY;
    while (capacity < needed) capacity *= 2;
    if (self->bytes == NULL) {
        self->bytes = PyBytes_FromStringAndSize(NULL, capacity);
        if (self->bytes == NULL) return -1;
    } else if (_PyBytes_Resize(&self->bytes, capacity) < 0) {
        self->size = self->capacity = 0;
        return -1;
    }
    self->capacity = capacity;
    return 0;
}

static inline char *body_end(Body *self) { return PyBytes_AS_STRING(self->bytes) + self->size; }

static PyObject *body_write(Body *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    if (body_reserve(self, view.len) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    memcpy(body_end(self), view.buf, view.len);
    self->size += view.len;
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(view.len);
}

static PyObject *body_tell(Body *self, PyObject *Py_UNUSED(ignored)) { return PyLong_FromSsize_t(self->size); }

static PyObject *body_take(Body *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *bytes = self->bytes;
    if (bytes == NULL) return PyBytes_FromStringAndSize(NULL, 0);
    if (_PyBytes_Resize(&bytes, self->size) < 0) bytes = NULL; /* shrinking: no copy */
    self->bytes = NULL;
    self->size = self->capacity = self->docs = 0;
    return bytes;
}

static void body_dealloc(Body *self) {
    Py_XDECREF(self->bytes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef body_methods[] = {
    {"write", (PyCFunction)body_write, METH_O, "Append bytes."},
    {"tell", (PyCFunction)body_tell, METH_NOARGS, "The body's size in bytes."},
    {"take", (PyCFunction)body_take, METH_NOARGS, "The body as bytes; the body starts again empty, with docs 0."},
    {NULL},
};

static PyMemberDef body_members[] = {
    {"docs", T_PYSSIZET, offsetof(Body, docs), 0, "operations written"},
    {NULL},
};

static PyTypeObject BodyType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hitmetrics._fastpath.Body",
    .tp_basicsize = sizeof(Body),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A bulk body being built: write(), tell(), take() and a docs counter.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)body_dealloc,
    .tp_methods = body_methods,
    .tp_members = body_members,
};

/* ---------------------------------------------------------------------------------------------------------------
   Writer: one landing file's records onto the bodies. */

typedef struct {
    PyObject_HEAD
    Py_ssize_t n_envs, n_slots;
    PyObject **envs;       /* bytes: each environment's UTF-8 */
    PyObject **envs_json;  /* bytes: each environment as a JSON string */
    long long *starts, *ends; /* slot i: UTC seconds [starts[i], ends[i]) all on one local day, at one offset */
    PyObject *tail;        /* bytes: the `_source` after `environment`, closing brace and newline included */
    PyObject *route;       /* route(slot, env) -> (Body, action line before the line number, after it) */
    PyObject **routes;     /* n_slots * n_envs, filled on first use */
    Py_ssize_t max_docs, max_bytes; /* a body this full is to be sent: the take stops after the record */
    int full;                        /* the last take stopped at a full body */
    int csv_width, csv_page, csv_datetime, csv_user, csv_env; /* csv_width 0: no header read yet */
} Writer;

static void writer_dealloc(Writer *self) {
    for (Py_ssize_t i = 0; i < self->n_envs; i++) {
        Py_XDECREF(self->envs[i]);
        Py_XDECREF(self->envs_json[i]);
    }
    if (self->routes)
        for (Py_ssize_t i = 0; i < self->n_slots * self->n_envs; i++) Py_XDECREF(self->routes[i]);
    PyMem_Free(self->envs);
    PyMem_Free(self->envs_json);
    PyMem_Free(self->starts);
    PyMem_Free(self->ends);
    PyMem_Free(self->routes);
    Py_XDECREF(self->tail);
    Py_XDECREF(self->route);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int writer_init(Writer *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"environments", "environments_json", "slots", "tail", "route", "max_docs", "max_bytes",
                            NULL};
    PyObject *envs, *envs_json, *slots, *tail, *route;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!O!SOnn:Writer", names, &PyTuple_Type, &envs, &PyTuple_Type,
                                     &envs_json, &PyTuple_Type, &slots, &tail, &route, &self->max_docs,
                                     &self->max_bytes))
        return -1;
    if (self->envs != NULL) {
        PyErr_SetString(PyExc_TypeError, "Writer is initialised once");
        return -1;
    }
    Py_ssize_t n_envs = PyTuple_GET_SIZE(envs), n_slots = PyTuple_GET_SIZE(slots);
    if (PyTuple_GET_SIZE(envs_json) != n_envs) {
        PyErr_SetString(PyExc_ValueError, "environments and environments_json differ in length");
        return -1;
    }
    self->envs = PyMem_Calloc(n_envs + 1, sizeof(PyObject *));
    self->envs_json = PyMem_Calloc(n_envs + 1, sizeof(PyObject *));
    self->starts = PyMem_Calloc(n_slots + 1, sizeof(long long));
    self->ends = PyMem_Calloc(n_slots + 1, sizeof(long long));
    self->routes = PyMem_Calloc(n_slots * n_envs + 1, sizeof(PyObject *));
    if (!self->envs || !self->envs_json || !self->starts || !self->ends || !self->routes) {
        PyErr_NoMemory();
        return -1;
    }
    self->n_envs = n_envs;
    self->n_slots = n_slots;
    for (Py_ssize_t i = 0; i < n_envs; i++) {
        PyObject *env = PyTuple_GET_ITEM(envs, i), *json = PyTuple_GET_ITEM(envs_json, i);
        if (!PyBytes_Check(env) || !PyBytes_Check(json)) {
            PyErr_SetString(PyExc_TypeError, "environments must be bytes");
            return -1;
        }
        self->envs[i] = Py_NewRef(env);
        self->envs_json[i] = Py_NewRef(json);
    }
    for (Py_ssize_t i = 0; i < n_slots; i++) {
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(slots, i), "LL", &self->starts[i], &self->ends[i])) return -1;
    }
    self->tail = Py_NewRef(tail);
    self->route = Py_NewRef(route);
    return 0;
}

static PyObject *writer_csv_columns(Writer *self, PyObject *args) {
    if (!PyArg_ParseTuple(args, "iiiii", &self->csv_width, &self->csv_page, &self->csv_datetime, &self->csv_user,
                          &self->csv_env))
        return NULL;
    int width = self->csv_width;
    if (width < 1 || width > 64 || self->csv_page < 0 || self->csv_page >= width || self->csv_datetime < 0 ||
        self->csv_datetime >= width || self->csv_user < 0 || self->csv_user >= width || self->csv_env < 0 ||
        self->csv_env >= width)
        self->csv_width = 0; /* a header this fast path does not handle: every line is left to Python */
    Py_RETURN_NONE;
}

/* The bytes of a valid UTF-8 sequence at s (1-4), or 0: the strict rules Python's decoder applies. */
static inline int utf8_sequence(const unsigned char *s, const unsigned char *end) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) return (end - s >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c < 0xF0) {
        if (end - s < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0; /* surrogate */
        return 3;
    }
    if (c < 0xF5) {
        if (end - s < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0; /* past U+10FFFF */
        return 4;
    }
    return 0;
}

/* Characters in valid UTF-8 text, or -1. */
static Py_ssize_t utf8_chars(const unsigned char *s, Py_ssize_t n) {
    const unsigned char *end = s + n;
    Py_ssize_t chars = 0;
    while (s < end) {
        int step = utf8_sequence(s, end);
        if (!step) return -1;
        s += step;
        chars++;
    }
    return chars;
}

/* A page written as it is into a JSON string: valid UTF-8 of 1..2048 characters, nothing to escape. */
static int plain_page(const unsigned char *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] == '"' || s[i] == '\\') return 0;
    Py_ssize_t chars = utf8_chars(s, n);
    return chars >= 1 && chars <= MAX_PAGE_CHARS;
}

typedef struct {
    int year, month, day, hour, minute, second, micro;
    long long epoch; /* whole seconds since 1970-01-01T00:00:00Z */
} Instant;

static inline int digits(const unsigned char *s, int n, int *value) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *value = v;
    return 1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static long long days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    int yoe = y - (int)(era * 400);
    int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The one datetime form taken: YYYY-MM-DDTHH:MM:SS, an optional fraction of 1-6 digits, Z; years 1000-9998 (as
   model.plain_utc). Python's fromisoformat reads it the same way; every other form is Python's to decide. */
static int parse_instant(const unsigned char *s, Py_ssize_t n, Instant *t) {
    if (n < 20 || s[n - 1] != 'Z' || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
        return 0;
    if (!digits(s, 4, &t->year) || !digits(s + 5, 2, &t->month) || !digits(s + 8, 2, &t->day) ||
        !digits(s + 11, 2, &t->hour) || !digits(s + 14, 2, &t->minute) || !digits(s + 17, 2, &t->second))
        return 0;
    t->micro = 0;
    if (n > 20) {
        int fraction_digits = (int)n - 21;
        if (s[19] != '.' || fraction_digits < 1 || fraction_digits > 6 || !digits(s + 20, fraction_digits, &t->micro))
            return 0;
        for (int i = fraction_digits; i < 6; i++) t->micro *= 10;
    }
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (t->year % 4 == 0 && t->year % 100 != 0) || t->year % 400 == 0;
    if (t->year < 1000 || t->year > 9998 || t->month < 1 || t->month > 12 || t->day < 1 ||
        t->day > month_days[t->month - 1] + (t->month == 2 && leap) || t->hour > 23 || t->minute > 59 ||
        t->second > 59)
        return 0;
    t->epoch = days_from_civil(t->year, t->month, t->day) * 86400 + t->hour * 3600 + t->minute * 60 + t->second;
    return 1;
}

static inline char *put_digits(char *out, int value, int width) {
    for (int i = width - 1; i >= 0; i--, value /= 10) out[i] = (char)('0' + value % 10);
    return out + width;
}

/* The instant as msgspec writes a UTC datetime: six fraction digits, or none when they are all zero. */
static int format_instant(const Instant *t, char *out) {
    char *p = put_digits(out, t->year, 4);
    *p++ = '-';
    p = put_digits(p, t->month, 2);
    *p++ = '-';
    p = put_digits(p, t->day, 2);
    *p++ = 'T';
    p = put_digits(p, t->hour, 2);
    *p++ = ':';
    p = put_digits(p, t->minute, 2);
    *p++ = ':';
    p = put_digits(p, t->second, 2);
    if (t->micro) {
        *p++ = '.';
        p = put_digits(p, t->micro, 6);
    }
    *p++ = 'Z';
    return (int)(p - out);
}

/* An unsigned integer in decimal. */
static int format_unsigned(unsigned long long value, char *out) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    for (int i = 0; i < n; i++) out[i] = digits[n - 1 - i];
    return n;
}

/* A non-negative integer in decimal. */
static int format_integer(long long value, char *out) { return format_unsigned((unsigned long long)value, out); }

/* A signed integer in decimal. */
static int format_signed(long long value, char *out) {
    if (value >= 0) return format_unsigned((unsigned long long)value, out);
    out[0] = '-';
    return 1 + format_unsigned(0ULL - (unsigned long long)value, out + 1);
}

/* hitmetrics.users.user_key: the long whose BitMixer.mix64 hash has the id's low 25 bits on top. */
static long long user_key_of(long long user_id) {
    uint64_t id = (uint64_t)user_id;
    uint64_t z = ((id & ((1ULL << 25) - 1)) << 39) | (id >> 25);
    z ^= z >> 32;
    z *= 0x8bfd21ac23740e59ULL;
    z ^= (z >> 29) ^ (z >> 58);
    z *= 0x4434dd7ecb5ab665ULL;
    z ^= z >> 32;
    return (long long)z;
}

static int find_env(Writer *self, const unsigned char *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < self->n_envs; i++) {
        PyObject *env = self->envs[i];
        if (PyBytes_GET_SIZE(env) == n && memcmp(PyBytes_AS_STRING(env), s, n) == 0) return (int)i;
    }
    return -1;
}

static int find_slot(Writer *self, long long epoch) {
    for (Py_ssize_t i = 0; i < self->n_slots; i++)
        if (self->starts[i] <= epoch && epoch < self->ends[i]) return (int)i;
    return -1;
}

/* A record found valid: its action line and `_source` onto its body. 1 written, 0 not ours (no slot), -1 error. */
static int write_record(Writer *self, long long number, const unsigned char *page, Py_ssize_t page_len,
                        const Instant *t, long long user_id, int env) {
    int slot = find_slot(self, t->epoch);
    if (slot < 0) return 0;
    PyObject **route = &self->routes[slot * self->n_envs + env];
    if (*route == NULL) {
        PyObject *found = PyObject_CallFunction(self->route, "ii", slot, env);
        if (found == NULL) return -1;
        if (!PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 3 ||
            !PyObject_TypeCheck(PyTuple_GET_ITEM(found, 0), &BodyType) || !PyBytes_Check(PyTuple_GET_ITEM(found, 1)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(found, 2))) {
            Py_DECREF(found);
            PyErr_SetString(PyExc_TypeError, "route must return (Body, bytes, bytes)");
            return -1;
        }
        *route = found;
    }
    Body *body = (Body *)PyTuple_GET_ITEM(*route, 0);
    PyObject *before = PyTuple_GET_ITEM(*route, 1), *after = PyTuple_GET_ITEM(*route, 2);
    PyObject *env_json = self->envs_json[env];
    char instant[40], number_text[24], user_text[24], key_text[24];
    int instant_len = format_instant(t, instant);
    int number_len = format_integer(number, number_text);
    int user_len = format_integer(user_id, user_text);
    int key_len = format_signed(user_key_of(user_id), key_text);
    static const char k_page[] = "{\"page\":\"", k_datetime[] = "\",\"datetime\":\"", k_user[] = "\",\"user_id\":",
                      k_key[] = ",\"user_key\":", k_env[] = ",\"environment\":";
#define PUT(data, len)                \
    do {                              \
        memcpy(out, (data), (len));   \
        out += (len);                 \
    } while (0)
    Py_ssize_t size = PyBytes_GET_SIZE(before) + number_len + PyBytes_GET_SIZE(after) + sizeof k_page - 1 + page_len +
                      sizeof k_datetime - 1 + instant_len + sizeof k_user - 1 + user_len + sizeof k_key - 1 + key_len +
                      sizeof k_env - 1 +
                      PyBytes_GET_SIZE(env_json) + PyBytes_GET_SIZE(self->tail);
    if (body_reserve(body, size) < 0) return -1;
    char *out = body_end(body);
    PUT(PyBytes_AS_STRING(before), PyBytes_GET_SIZE(before));
    PUT(number_text, number_len);
    PUT(PyBytes_AS_STRING(after), PyBytes_GET_SIZE(after));
    PUT(k_page, sizeof k_page - 1);
    PUT(page, page_len);
    PUT(k_datetime, sizeof k_datetime - 1);
    PUT(instant, instant_len);
    PUT(k_user, sizeof k_user - 1);
    PUT(user_text, user_len);
    PUT(k_key, sizeof k_key - 1);
    PUT(key_text, key_len);
    PUT(k_env, sizeof k_env - 1);
    PUT(PyBytes_AS_STRING(env_json), PyBytes_GET_SIZE(env_json));
    PUT(PyBytes_AS_STRING(self->tail), PyBytes_GET_SIZE(self->tail));
#undef PUT
    body->size += size;
    body->docs += 1;
    if (body->docs >= self->max_docs || body->size >= self->max_bytes) self->full = 1;
    return 1;
}

/* ---- JSON: an object of exactly the four keys, plain strings, a plain non-negative integer. */

static inline const unsigned char *skip_space(const unsigned char *s, const unsigned char *end) {
    while (s < end && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++;
    return s;
}

/* A JSON string without escapes or control characters at s (its opening quote); its contents in *text, *len.
   Returns the position after the closing quote, or NULL. */
static const unsigned char *plain_string(const unsigned char *s, const unsigned char *end, const unsigned char **text,
                                         Py_ssize_t *len) {
    if (s >= end || *s != '"') return NULL;
    const unsigned char *start = ++s;
    while (s < end && *s != '"') {
        if (*s == '\\' || *s < 0x20) return NULL;
        s++;
    }
    if (s >= end) return NULL;
    *text = start;
    *len = s - start;
    return s + 1;
}

static int take_json_line(Writer *self, const unsigned char *s, Py_ssize_t n, long long number) {
    const unsigned char *end = s + n, *page = NULL, *when = NULL, *env_text = NULL;
    Py_ssize_t page_len = 0, when_len = 0, env_len = 0;
    long long user_id = -1;
    int seen = 0;
    s = skip_space(s, end);
    if (s >= end || *s++ != '{') return 0;
    for (;;) {
        const unsigned char *key;
        Py_ssize_t key_len;
        s = plain_string(skip_space(s, end), end, &key, &key_len);
        if (s == NULL) return 0;
        s = skip_space(s, end);
        if (s >= end || *s++ != ':') return 0;
        s = skip_space(s, end);
        int field;
        if (key_len == 4 && memcmp(key, "page", 4) == 0) field = 1;
        else if (key_len == 8 && memcmp(key, "datetime", 8) == 0) field = 2;
        else if (key_len == 7 && memcmp(key, "user_id", 7) == 0) field = 4;
        else if (key_len == 11 && memcmp(key, "environment", 11) == 0) field = 8;
        else return 0; /* other keys are ignored by the Python way: rare enough to leave to it */
        if (seen & field) return 0;
        seen |= field;
        if (field == 4) {
            if (s >= end || *s < '0' || *s > '9') return 0;
            if (*s == '0' && s + 1 < end && s[1] >= '0' && s[1] <= '9') return 0; /* not JSON */
            user_id = 0;
            for (int count = 0; s < end && *s >= '0' && *s <= '9'; s++) {
                if (++count > 10) return 0;
                user_id = user_id * 10 + (*s - '0');
            }
            if (user_id > MAX_USER_ID || (s < end && (*s == '.' || *s == 'e' || *s == 'E'))) return 0;
        } else {
            const unsigned char **text = field == 1 ? &page : field == 2 ? &when : &env_text;
            Py_ssize_t *len = field == 1 ? &page_len : field == 2 ? &when_len : &env_len;
            s = plain_string(s, end, text, len);
            if (s == NULL) return 0;
        }
        s = skip_space(s, end);
        if (s >= end) return 0;
        if (*s == '}') break;
        if (*s++ != ',') return 0;
    }
    if (seen != 15 || skip_space(s + 1, end) != end) return 0;
    Instant t;
    int env = find_env(self, env_text, env_len);
    if (env < 0 || !plain_page(page, page_len) || !parse_instant(when, when_len, &t)) return 0;
    return write_record(self, number, page, page_len, &t, user_id, env);
}

/* ---- CSV: a line without quotes, CR or NUL in the header's width; the cells as ingest's fast path reads them. */

static int take_csv_line(Writer *self, const unsigned char *s, Py_ssize_t n, long long number) {
    const unsigned char *cells[64];
    Py_ssize_t lens[64];
    int width = self->csv_width, count = 0;
    if (width == 0) return 0;
    const unsigned char *start = s, *end = s + n;
    for (const unsigned char *p = s;; p++) {
        if (p == end || *p == ',') {
            if (count == width) return 0;
            cells[count] = start;
            lens[count++] = p - start;
            if (p == end) break;
            start = p + 1;
        } else if (*p == '"' || *p == '\r' || *p == 0) {
            return 0;
        }
    }
    if (count != width || utf8_chars(s, n) < 0) return 0;
    const unsigned char *user = cells[self->csv_user];
    Py_ssize_t user_len = lens[self->csv_user];
    if (user_len == 0) return 0;
    long long user_id = 0;
    int significant = 0;
    for (Py_ssize_t i = 0; i < user_len; i++) {
        if (user[i] < '0' || user[i] > '9') return 0;
        if (significant || user[i] != '0') significant++;
        if (significant > 10) return 0;
        user_id = user_id * 10 + (user[i] - '0');
    }
    Instant t;
    int env = find_env(self, cells[self->csv_env], lens[self->csv_env]);
    if (user_id > MAX_USER_ID || env < 0 || !plain_page(cells[self->csv_page], lens[self->csv_page]) ||
        !parse_instant(cells[self->csv_datetime], lens[self->csv_datetime], &t))
        return 0;
    return write_record(self, number, cells[self->csv_page], lens[self->csv_page], &t, user_id, env);
}

typedef int (*take_line)(Writer *, const unsigned char *, Py_ssize_t, long long);

static PyObject *take_lines(Writer *self, PyObject *args, take_line take) {
    PyObject *lines;
    Py_ssize_t position;
    long long first;
    if (!PyArg_ParseTuple(args, "O!nL", &PyList_Type, &lines, &position, &first)) return NULL;
    Py_ssize_t count = PyList_GET_SIZE(lines);
    self->full = 0;
    while (position < count && !self->full) {
        PyObject *line = PyList_GET_ITEM(lines, position);
        if (!PyBytes_Check(line)) break;
        Py_ssize_t n = PyBytes_GET_SIZE(line);
        if (n >= MAX_LINE_BYTES) break;
        int taken = take(self, (const unsigned char *)PyBytes_AS_STRING(line), n, first + position);
        if (taken < 0) return NULL;
        if (!taken) break;
        position++;
    }
    return PyLong_FromSsize_t(position);
}

static PyObject *writer_take_json(Writer *self, PyObject *args) { return take_lines(self, args, take_json_line); }
static PyObject *writer_take_csv(Writer *self, PyObject *args) { return take_lines(self, args, take_csv_line); }

static PyMemberDef writer_members[] = {
    {"full", T_INT, offsetof(Writer, full), READONLY, "the last take stopped after filling a body (to be sent)"},
    {NULL},
};

static PyMethodDef writer_methods[] = {
    {"take_json", (PyCFunction)writer_take_json, METH_VARARGS,
     "take_json(lines, position, first_number) -> the position of the first line not taken, or after the line "
     "that filled a body (then `full`)."},
    {"take_csv", (PyCFunction)writer_take_csv, METH_VARARGS,
     "take_csv(lines, position, first_number): take_json for CSV lines (none are taken before csv_columns)."},
    {"csv_columns", (PyCFunction)writer_csv_columns, METH_VARARGS,
     "csv_columns(width, page, datetime, user_id, environment): the header's width and the fields' positions."},
    {NULL},
};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hitmetrics._fastpath.Writer",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Writer(environments, environments_json, slots, tail, route, max_docs, max_bytes): one landing "
              "file's usual records onto the bulk bodies.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)writer_init,
    .tp_dealloc = (destructor)writer_dealloc,
    .tp_methods = writer_methods,
    .tp_members = writer_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "hitmetrics._fastpath",
    .m_doc = "The loader's fast path in C: usual records written straight onto the bulk bodies.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&BodyType) < 0 || PyType_Ready(&WriterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    /* The limits it shares with model.py and ingest.py, for a test to compare. */
    if (PyModule_AddObjectRef(m, "Body", (PyObject *)&BodyType) < 0 ||
        PyModule_AddObjectRef(m, "Writer", (PyObject *)&WriterType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_PAGE_CHARS", MAX_PAGE_CHARS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_USER_ID", (long)MAX_USER_ID) < 0 ||
        PyModule_AddIntConstant(m, "MAX_LINE_BYTES", MAX_LINE_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
