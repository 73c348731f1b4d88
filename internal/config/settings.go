package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Setting is one key of the configuration file as the admin console's SHOW CONFIG lists it.
type Setting struct {
	Key     string // section.name, as in the file: "cluster.pool_size"
	Value   string // in force
	Default string
	// Reloadable: a reload (SIGHUP, RELOAD) applies a change; otherwise it needs a restart.
	Reloadable bool
}

// restartOnly are the settings a reload does not apply: the admin listener, the Unix socket
// directory, the log format and the discovery mode. A reload keeps their running values
// (KeepRestartOnly). The endpoints' listeners, the [proxy] shorthands' included, are reloadable.
var restartOnly = map[string]bool{
	"admin.listen":          true,
	"proxy.unix_socket_dir": true,
	"proxy.log_format":      true,
	"cluster.discovery":     true,
}

// KeepRestartOnly gives next the running values (cur's) of the settings a reload cannot apply,
// and returns those that differed (Value: the running one, Default: the file's), for the reload
// to warn about.
func KeepRestartOnly(cur, next *Config) (changed []Setting) {
	cv, nv := reflect.ValueOf(cur).Elem(), reflect.ValueOf(next).Elem()
	for i := range cv.NumField() {
		section := cv.Type().Field(i)
		name := tomlName(section)
		if name == "" || section.Type.Kind() != reflect.Struct {
			continue
		}
		for j := range section.Type.NumField() {
			key := name + "." + tomlName(section.Type.Field(j))
			if !restartOnly[key] {
				continue
			}
			if c, n := cv.Field(i).Field(j), nv.Field(i).Field(j); !reflect.DeepEqual(c.Interface(), n.Interface()) {
				changed = append(changed, Setting{Key: key, Value: formatSetting(c), Default: formatSetting(n)})
				n.Set(c)
			}
		}
	}
	return changed
}

// Settings returns every key of the file's sections with its value in c and its default, in the
// order of the Config struct, then the [[endpoint]] tables' as "endpoint.<name>.<key>". Nothing from the users file appears, and a key whose name says
// password would show as "********": the listing is safe to show to operators.
func (c *Config) Settings() []Setting {
	var out []Setting
	cur, def := reflect.ValueOf(c).Elem(), reflect.ValueOf(Defaults()).Elem()
	for i := range cur.NumField() {
		section := cur.Type().Field(i)
		name := tomlName(section)
		if name == "" || section.Type.Kind() != reflect.Struct {
			continue // Users, Path
		}
		for j := range section.Type.NumField() {
			key := name + "." + tomlName(section.Type.Field(j))
			s := Setting{Key: key, Reloadable: !restartOnly[key],
				Value: formatSetting(cur.Field(i).Field(j)), Default: formatSetting(def.Field(i).Field(j))}
			switch {
			case strings.Contains(key, "password"):
				s.Value, s.Default = "********", "********"
			case key == "tls.client_tls": // its default depends on cert_file
				s.Default = c.TLS.DefaultClientTLS()
			}
			out = append(out, s)
		}
	}
	return append(out, c.endpointSettings()...)
}

func tomlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// formatSetting writes v as the file would hold it, without TOML's quotes: lists joined by
// commas, tables as key=value pairs sorted by key.
func formatSetting(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case Duration:
		return x.Duration.String()
	case string:
		return x
	case []string:
		return strings.Join(x, ",")
	case map[string]int:
		var pairs []string
		for _, k := range slices.Sorted(maps.Keys(x)) {
			pairs = append(pairs, k+"="+strconv.Itoa(x[k]))
		}
		return strings.Join(pairs, ",")
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(v.Interface())
}
