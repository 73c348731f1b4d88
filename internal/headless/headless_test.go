package headless

import "testing"

func TestParse(t *testing.T) {
	d := Parse(`<html><body><div id="a" data-x="1 &amp; &lt;2&gt;" hidden><div class="in">one <b>two</b></div>` +
		`<div class="in">three</div></div><div id="b">four</div><br></body></html>`)
	a, err := d.One("id", "a")
	if err != nil {
		t.Fatal(err)
	}
	if a.Tag != "div" || a.Attrs["data-x"] != "1 & <2>" {
		t.Errorf("element %+v", a)
	}
	if _, ok := a.Attrs["hidden"]; !ok {
		t.Error("a boolean attribute is lost")
	}
	for _, tc := range []struct {
		want []string
		n    int
		text string
	}{
		{[]string{"id", "a"}, 1, "one two three"},
		{[]string{"class", "in"}, 2, "one two"},
		{[]string{"id", "*"}, 2, "one two three"},
		{[]string{"id", "b"}, 1, "four"},
		{[]string{"id", "c"}, 0, ""},
	} {
		found := d.Find(tc.want...)
		if len(found) != tc.n {
			t.Errorf("Find(%q): %d elements, want %d", tc.want, len(found), tc.n)
			continue
		}
		if tc.n > 0 {
			if got := d.Text(found[0]); got != tc.text {
				t.Errorf("Text of the first of %q = %q, want %q", tc.want, got, tc.text)
			}
		}
	}
	if _, err := d.One("class", "in"); err == nil {
		t.Error("One found one of two elements")
	}
}
