package admin

import (
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Type OIDs of the console's result columns, in the text format: int8 for counts and flags, as
// PgBouncer sends them, float8 for lag in seconds, text for everything else.
const (
	oidInt8   = 20
	oidText   = 25
	oidFloat8 = 701
)

// column is one column of a result set.
type column struct {
	name string
	oid  uint32
}

func intCol(name string) column   { return column{name, oidInt8} }
func textCol(name string) column  { return column{name, oidText} }
func floatCol(name string) column { return column{name, oidFloat8} }

// result builds one result set's messages (RowDescription, DataRows) in memory: commands take
// their snapshot, fill a result and only then is anything written to the client.
type result struct {
	cols []column
	buf  []byte
	vals [][]byte // scratch for one row
}

func newResult(cols ...column) *result {
	fields := make([]pgproto3.FieldDescription, len(cols))
	for i, c := range cols {
		size := int16(-1)
		if c.oid != oidText {
			size = 8
		}
		fields[i] = pgproto3.FieldDescription{Name: []byte(c.name), DataTypeOID: c.oid, DataTypeSize: size, TypeModifier: -1}
	}
	r := &result{cols: cols}
	r.buf, _ = (&pgproto3.RowDescription{Fields: fields}).Encode(nil) // fails only past 65535 fields
	return r
}

// row appends one DataRow. Each value is written in the text format: nil is NULL; a time.Time is
// a UTC timestamp, NULL when zero; a bool is 1 or 0.
func (r *result) row(vals ...any) {
	if len(vals) != len(r.cols) {
		panic(fmt.Sprintf("admin: row of %d values for %d columns", len(vals), len(r.cols)))
	}
	r.vals = r.vals[:0]
	for _, v := range vals {
		r.vals = append(r.vals, textValue(v))
	}
	r.buf, _ = (&pgproto3.DataRow{Values: r.vals}).Encode(r.buf)
}

// timeFormat is how the console shows times, PgBouncer's format in UTC.
const timeFormat = "2006-01-02 15:04:05 MST"

func textValue(v any) []byte {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return []byte(x)
	case int:
		return strconv.AppendInt(nil, int64(x), 10)
	case int64:
		return strconv.AppendInt(nil, x, 10)
	case uint32:
		return strconv.AppendUint(nil, uint64(x), 10)
	case float64:
		return strconv.AppendFloat(nil, x, 'f', -1, 64)
	case bool:
		if x {
			return []byte("1")
		}
		return []byte("0")
	case time.Time:
		if x.IsZero() {
			return nil
		}
		return x.UTC().AppendFormat(nil, timeFormat)
	}
	panic(fmt.Sprintf("admin: no text format for %T", v))
}
