package admin

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net/http"
)

// statusPage is the status page: one HTML file with its CSS and JavaScript inline, so that it
// works offline and loads nothing from elsewhere. It draws /status.json.
//
//go:embed statuspage.html
var statusPage []byte

// statusPageCSP allows the page's own inline style and script (by their hashes) and fetches
// from its own origin, nothing else: no external scripts, styles, fonts, images or frames.
var statusPageCSP = pageCSP(statusPage)

// pageCSP returns a Content-Security-Policy allowing exactly page's one inline <style> and one
// inline <script>, by hash. It panics when page does not have exactly one of each: the page is
// embedded, so that is a build mistake a test catches.
func pageCSP(page []byte) string {
	hash := func(tag string) string {
		open, close := []byte("<"+tag+">"), []byte("</"+tag+">")
		if bytes.Count(page, open) != 1 || bytes.Count(page, close) != 1 {
			panic(fmt.Sprintf("admin: the status page must have exactly one inline <%s>", tag))
		}
		body := page[bytes.Index(page, open)+len(open) : bytes.Index(page, close)]
		sum := sha256.Sum256(body)
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return "default-src 'none'; script-src " + hash("script") + "; style-src " + hash("style") +
		"; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// servePage answers GET / with the status page.
func servePage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", statusPageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	w.Write(statusPage)
}
