package session

import (
	"reflect"
	"testing"
)

func TestErrorCounter(t *testing.T) {
	var c ErrorCounter
	for _, code := range []string{"42601", "42P01", "53300", "08006", "XX000", "4260", "", "4a000", "zz999"} {
		countError(&c, code)
	}
	countError(&c, []byte("57P01"))
	countError[string](nil, "42601") // a nil counter counts nothing
	got := map[string]int64{}
	var order []string
	c.Each(func(class string, n int64) {
		got[class] = n
		order = append(order, class)
	})
	want := map[string]int64{"42": 2, "53": 1, "08": 1, "XX": 1, "57": 1, "": 4}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
	if !reflect.DeepEqual(order, []string{"08", "42", "53", "57", "XX", ""}) {
		t.Fatalf("order %v", order)
	}
	if n := testing.AllocsPerRun(100, func() { countError(&c, []byte("42601")) }); n != 0 {
		t.Fatalf("counting allocates %v times", n)
	}
}
