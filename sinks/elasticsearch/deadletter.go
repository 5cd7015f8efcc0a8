package elasticsearch

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// deadLetter appends the documents Elasticsearch rejected for their content
// to an NDJSON file, one line each:
//
//	{"@timestamp":"…","index":"…","id":"…","status":400,"error":{"type":"…","reason":"…"},"document":{…}}
//
// so that they can be inspected, fixed and re-sent with _bulk. The file is
// created on first use (mode 0600: it holds flow data), fsynced after each
// write, and grows to at most max bytes.
type deadLetter struct {
	path string
	max  int64
	f    *os.File
	size int64
	buf  []byte
}

// rejection is a document with Elasticsearch's reason for refusing it.
type rejection struct {
	doc    *doc
	status int
	errTyp string
	reason string
}

// write appends rs and returns how many it wrote; the rest did not fit or
// the write failed (err).
func (d *deadLetter) write(rs []rejection) (int, error) {
	if d.f == nil {
		if err := os.MkdirAll(filepath.Dir(d.path), 0o755); err != nil {
			return 0, fmt.Errorf("dead-letter file: %w", err)
		}
		f, err := os.OpenFile(d.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return 0, fmt.Errorf("dead-letter file: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return 0, fmt.Errorf("dead-letter file: %w", err)
		}
		d.f, d.size = f, st.Size()
	}
	now := time.Now()
	d.buf = d.buf[:0]
	n := 0
	for _, r := range rs {
		start := len(d.buf)
		d.buf = append(d.buf, `{"@timestamp":`...)
		d.buf = appendTime(d.buf, now)
		d.buf = append(d.buf, `,"index":`...)
		d.buf = appendString(d.buf, r.doc.index)
		d.buf = append(d.buf, `,"id":`...)
		d.buf = appendString(d.buf, r.doc.id)
		d.buf = append(d.buf, `,"status":`...)
		d.buf = strconv.AppendInt(d.buf, int64(r.status), 10)
		d.buf = append(d.buf, `,"error":{"type":`...)
		d.buf = appendString(d.buf, r.errTyp)
		d.buf = append(d.buf, `,"reason":`...)
		d.buf = appendString(d.buf, r.reason)
		d.buf = append(d.buf, `},"document":`...)
		d.buf = append(d.buf, r.doc.body...)
		d.buf = append(d.buf, "}\n"...)
		if d.size+int64(len(d.buf)) > d.max {
			d.buf = d.buf[:start]
			break
		}
		n++
	}
	if n == 0 {
		return 0, nil
	}
	if _, err := d.f.Write(d.buf); err != nil {
		// A partial line would break the NDJSON: cut it off.
		_ = d.f.Truncate(d.size)
		return 0, fmt.Errorf("dead-letter file %s: %w", d.path, err)
	}
	if err := d.f.Sync(); err != nil {
		return 0, fmt.Errorf("dead-letter file %s: %w", d.path, err)
	}
	d.size += int64(len(d.buf))
	return n, nil
}

func (d *deadLetter) close() error {
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}
