package classify

import "encoding/binary"

// The words and functions the route classifier knows. Everything here errs towards the writer: a
// word missing from constructs makes a construct look like a call to an unknown function, a
// function missing from the read list sends its caller to Functions and, failing that, to the
// writer.

// word identifies the unquoted words the route rules test; wNone for any other.
type word uint8

const (
	wNone word = iota
	wAnalyze
	wAnd
	wAs
	wBit
	wBy
	wChain
	wChar
	wCharacter
	wColumns
	wDelete
	wDistinct
	wFetch
	wFirst
	wFor
	wFrom
	wGroup
	wGrouping
	wInsert
	wInto
	wJoin
	wKey
	wLevel
	wLocal
	wMaterialized
	wMerge
	wNchar
	wNext
	wNo
	wNot
	wOn
	wOnly
	wOperator
	wOrder
	wPartition
	wPrepared
	wRead
	wRecursive
	wSecond
	wSelect
	wSerializable
	wSession
	wSets
	wShare
	wStdout
	wTable
	wTablesample
	wTime
	wTo
	wTransaction
	wUpdate
	wValues
	wVarying
	wWith
	wWrite
	wZone
)

// wordInfo is what the classifier knows of an unquoted word: its id and whether it is a keyword
// that cannot name a function.
type wordInfo uint16

const (
	// wiConstruct: a reserved or column-name keyword. The grammar never takes such a word
	// followed by '(' as a call of a function by that name: it is syntax (EXISTS (...),
	// COALESCE(...), VALUES (...), numeric(10, 2), SELECT (...), WITHIN GROUP (...)).
	wiConstruct wordInfo = 1 << 8
	// wiReserved: a reserved keyword, which cannot be a table name or alias unquoted.
	wiReserved wordInfo = 1 << 9
)

func (w wordInfo) id() word { return word(w) }

// maxWordLen is the longest word in words.
const maxWordLen = 17 // current_timestamp

// wordInfos holds what the classifier knows of the lower-case words the route rules test.
var wordInfos = func() map[string]wordInfo {
	m := make(map[string]wordInfo)
	add := func(info wordInfo, ws ...string) {
		for _, w := range ws {
			m[w] |= info
		}
	}
	// PostgreSQL's reserved keywords (kwlist.h, RESERVED_KEYWORD), up to version 18.
	add(wiConstruct|wiReserved, "all", "analyse", "analyze", "and", "any", "array", "as", "asc",
		"asymmetric", "both", "case", "cast", "check", "collate", "column", "constraint", "create",
		"current_catalog", "current_date", "current_role", "current_time", "current_timestamp",
		"current_user", "default", "deferrable", "desc", "distinct", "do", "else", "end", "except",
		"false", "fetch", "for", "foreign", "from", "grant", "group", "having", "in", "initially",
		"intersect", "into", "lateral", "leading", "limit", "localtime", "localtimestamp", "not",
		"null", "offset", "on", "only", "or", "order", "placing", "primary", "references",
		"returning", "select", "session_user", "some", "symmetric", "system_user", "table", "then",
		"to", "trailing", "true", "union", "unique", "user", "using", "variadic", "when", "where",
		"window", "with")
	// Column-name keywords (COL_NAME_KEYWORD): types with modifiers and special function syntax.
	add(wiConstruct, "between", "bigint", "bit", "boolean", "char", "character",
		"coalesce", "dec", "decimal", "exists", "extract", "float", "greatest", "grouping", "inout",
		"int", "integer", "interval", "json", "json_array", "json_arrayagg", "json_exists",
		"json_object", "json_objectagg", "json_query", "json_scalar", "json_serialize", "json_table",
		"json_value", "least", "merge_action", "national", "nchar", "none", "normalize", "nullif",
		"numeric", "out", "overlay", "position", "precision", "real", "row", "setof", "smallint",
		"substring", "time", "timestamp", "treat", "trim", "values", "varchar", "xmlattributes",
		"xmlconcat", "xmlelement", "xmlexists", "xmlforest", "xmlnamespaces", "xmlparse", "xmlpi",
		"xmlroot", "xmlserialize", "xmltable")
	for w, id := range map[string]word{
		"analyze": wAnalyze, "analyse": wAnalyze, "and": wAnd, "as": wAs, "bit": wBit, "by": wBy,
		"chain": wChain, "char": wChar, "character": wCharacter, "columns": wColumns,
		"delete": wDelete, "distinct": wDistinct, "fetch": wFetch, "first": wFirst, "for": wFor,
		"from": wFrom, "group": wGroup, "grouping": wGrouping, "insert": wInsert, "into": wInto,
		"join": wJoin, "key": wKey, "level": wLevel, "local": wLocal, "materialized": wMaterialized,
		"merge": wMerge, "nchar": wNchar, "next": wNext, "no": wNo, "not": wNot, "on": wOn,
		"only": wOnly, "operator": wOperator, "order": wOrder, "partition": wPartition,
		"prepared": wPrepared, "read": wRead, "recursive": wRecursive, "second": wSecond,
		"select": wSelect, "serializable": wSerializable, "session": wSession, "sets": wSets, "share": wShare, "stdout": wStdout,
		"table": wTable, "tablesample": wTablesample, "time": wTime, "to": wTo,
		"transaction": wTransaction, "update": wUpdate, "values": wValues, "varying": wVarying,
		"with": wWith, "write": wWrite, "zone": wZone,
	} {
		m[w] |= wordInfo(id)
	}
	return m
}()

// words is the table lookup reads: wordInfos and statementStarts.
var words = func() (t wordTable) {
	for w, info := range wordInfos {
		t.entry(w).info = info
	}
	for w, s := range statementStarts {
		t.entry(w).start = s
	}
	return t
}()

// wordTable is an open-addressing hash table of words keyed by wordKey, never more than half
// full. A lookup per identifier is on the scan's hot path: the key is a few loads, the hash a
// few multiplications, and a probe compares integers, with no string comparison.
type wordTable [512]wordEntry

// wordEntry is one word of the table: what the route rules know of it, what it does as a
// statement's first word, and whether it holds one of MaySetSessionState's words.
type wordEntry struct {
	key     wordKey
	info    wordInfo
	start   stmtStart
	trigger bool
}

// wordKey is a word of 1 to maxWordLen bytes packed into integers with ASCII letters in lower
// case: its first 8 bytes in a, its last 8 in b (overlapping a when shorter than 16; a word of 4
// to 7 bytes has its first 4 and last 4 in a, and one of 1 to 3 its bytes), and bytes 8-15 in c
// when it is longer than 16. Setting bit 0x20 of every byte folds A-Z onto a-z and leaves the
// other bytes of an identifier apart ('_' becomes 0x7f, which no other byte of one becomes;
// bytes from 0x80 up stay there, where no word of the table has any), so two identifiers of
// one length have one key only if they are the same word in any case.
type wordKey struct {
	a, b, c uint64
	n       uint8
}

const fold64 = 0x2020202020202020

func keyOf(w []byte) (k wordKey) {
	n := len(w)
	k.n = uint8(n)
	switch {
	case n >= 8:
		k.a = binary.LittleEndian.Uint64(w) | fold64
		k.b = binary.LittleEndian.Uint64(w[n-8:]) | fold64
		if n > 16 {
			k.c = binary.LittleEndian.Uint64(w[8:]) | fold64
		}
	case n >= 4:
		k.a = uint64(binary.LittleEndian.Uint32(w)|fold64&0xffffffff) |
			uint64(binary.LittleEndian.Uint32(w[n-4:])|fold64&0xffffffff)<<32
	default:
		for i, c := range w {
			k.a |= uint64(c|0x20) << (8 * i)
		}
	}
	return k
}

func (k *wordKey) slot() uint64 {
	h := (k.a*0x9e3779b97f4a7c15 ^ k.b*0xc2b2ae3d27d4eb4f ^ k.c) + uint64(k.n)
	return (h * 0x165667b19e3779f9) >> (64 - 9) // 512 slots
}

// entry returns w's entry, adding an empty one if it has none. Only for building the table.
func (t *wordTable) entry(w string) *wordEntry {
	if len(w) == 0 || len(w) > maxWordLen {
		panic("classify: word " + w + " does not fit the table")
	}
	k := keyOf([]byte(w))
	for i := k.slot(); ; i++ {
		e := &t[i%uint64(len(t))]
		if e.key == k {
			return e
		}
		if e.key.n == 0 {
			e.key, e.trigger = k, MaySetSessionState([]byte(w))
			return e
		}
	}
}

// lookup returns the table's entry for the unquoted word w, nil if it has none. Most words of a
// text are names the table does not have; most of those have a length and a first letter that
// no word of the table has (see wordFilter), and cost a few instructions.
func lookup(w []byte) *wordEntry {
	if n := uint(len(w)); n-1 >= maxWordLen || wordFilter[n]>>(w[0]&31)&1 == 0 {
		return nil // n-1 wraps for an empty word
	}
	return lookupKey(w)
}

// wordFilter has, for each length, bit c&31 set for the first byte c of each word of words of
// that length (&31 folds ASCII case; other bytes alias, which only lets more through).
var wordFilter = func() (f [maxWordLen + 1]uint32) {
	for _, e := range words {
		if e.key.n > 0 {
			f[e.key.n] |= 1 << (e.key.a & 31)
		}
	}
	return f
}()

// lookupKey is lookup past wordFilter.
func lookupKey(w []byte) *wordEntry {
	k := keyOf(w)
	for i := k.slot(); ; i++ {
		e := &words[i%uint64(len(words))]
		if e.key == k {
			return e
		}
		if e.key.n == 0 {
			return nil
		}
	}
}

// lookupWord returns what the classifier knows of the unquoted word w.
func lookupWord(w []byte) wordInfo {
	if e := lookup(w); e != nil {
		return e.info
	}
	return 0
}

// stmtStart is what a word does as a statement's first word: how the rest of the statement is
// read, and whether the word alone needs the writer, for which reason, and whether even inside
// a READ ONLY transaction (see routeStmt.verdict). known is false for a word that starts no
// statement the classifier knows.
type stmtStart struct {
	kind                stmtKind
	reason              RouteReason
	known, needs, force bool
}

// startOf returns what the unquoted word w does as a statement's first word.
func startOf(w []byte) stmtStart {
	if e := lookup(w); e != nil && e.start.known {
		return e.start
	}
	return stmtStart{reason: ReasonUnclassified, needs: true, force: true}
}

// statementStarts are the words a statement the classifier knows starts with.
var statementStarts = func() map[string]stmtStart {
	m := make(map[string]stmtStart)
	set := func(s stmtStart, ws ...string) {
		s.known = true
		for _, w := range ws {
			m[w] = s
		}
	}
	set(stmtStart{kind: kQuery}, "select", "with", "values", "table")
	set(stmtStart{kind: kShow}, "show")
	set(stmtStart{kind: kExplain}, "explain")
	set(stmtStart{kind: kCopy}, "copy")
	set(stmtStart{reason: ReasonWrite, needs: true}, "insert", "update", "delete", "merge")
	set(stmtStart{reason: ReasonDDL, needs: true}, "create", "alter", "drop", "truncate", "comment",
		"grant", "revoke", "security", "import", "reassign")
	set(stmtStart{reason: ReasonMaintenance, needs: true}, "vacuum", "analyze", "analyse", "refresh",
		"cluster", "reindex")
	// A standby runs CHECKPOINT as a restartpoint; a read-only transaction does not refuse it.
	set(stmtStart{reason: ReasonMaintenance, needs: true, force: true}, "checkpoint")
	set(stmtStart{reason: ReasonCall, needs: true}, "call")
	set(stmtStart{reason: ReasonDo, needs: true}, "do")
	set(stmtStart{reason: ReasonLock, needs: true, force: true}, "lock")
	set(stmtStart{reason: ReasonNotify, needs: true, force: true}, "notify", "listen", "unlisten")
	set(stmtStart{kind: kPrepare}, "prepare")
	set(stmtStart{reason: ReasonPreparedStatement, needs: true}, "execute", "deallocate")
	set(stmtStart{kind: kSet, reason: ReasonSessionState, needs: true}, "set")
	set(stmtStart{reason: ReasonSessionState, needs: true}, "reset", "discard", "load")
	set(stmtStart{reason: ReasonCursor, needs: true}, "declare", "fetch", "move", "close")
	set(stmtStart{kind: kBegin}, "begin", "start")
	set(stmtStart{kind: kEnd, reason: ReasonTransaction, needs: true}, "commit", "end", "rollback", "abort")
	set(stmtStart{reason: ReasonTransaction, needs: true}, "savepoint", "release")
	return m
}()

// builtin is what the classifier knows of a pg_catalog function.
type builtin struct {
	write  bool        // the call needs the writer, for reason
	reason RouteReason // why, when write
	force  bool        // still the writer inside a READ ONLY transaction (see ClassifyRoute)
}

// builtins are the pg_catalog functions the classifier knows by name, without asking Functions:
// those that need the writer, and a list of common ones that only read. Names starting with
// pg_advisory_, pg_try_advisory_ or lo_ are writers too (see builtinPrefix).
var builtins = func() map[string]builtin {
	m := make(map[string]builtin, 512)
	writer := func(r RouteReason, force bool, names ...string) {
		for _, n := range names {
			m[n] = builtin{write: true, reason: r, force: force}
		}
	}
	// nextval and setval are refused in a read-only transaction anyway; currval and lastval
	// read what this session's nextval left, which only the writer's connection has.
	writer(ReasonSequence, false, "nextval", "setval")
	writer(ReasonSequence, true, "currval", "lastval")
	writer(ReasonSetConfig, false, "set_config")
	writer(ReasonTxid, true, "txid_current", "txid_current_if_assigned", "pg_current_xact_id",
		"pg_current_xact_id_if_assigned")
	writer(ReasonWAL, true, "pg_current_wal_lsn", "pg_current_wal_insert_lsn",
		"pg_current_wal_flush_lsn", "pg_switch_wal", "pg_create_restore_point", "pg_walfile_name",
		"pg_walfile_name_offset", "pg_log_standby_snapshot",
		// The names before PostgreSQL 10.
		"pg_current_xlog_location", "pg_current_xlog_insert_location",
		"pg_current_xlog_flush_location", "pg_switch_xlog", "pg_xlogfile_name",
		"pg_xlogfile_name_offset")
	writer(ReasonLargeObject, false, "loread", "lowrite")
	writer(ReasonNotify, true, "pg_notify")
	writer(ReasonServerRole, true, "pg_is_in_recovery")

	for _, n := range []string{
		// Aggregates and window functions.
		"count", "sum", "avg", "min", "max", "array_agg", "string_agg", "json_agg", "jsonb_agg",
		"json_agg_strict", "jsonb_agg_strict", "json_object_agg", "jsonb_object_agg",
		"json_object_agg_strict", "jsonb_object_agg_strict", "json_object_agg_unique",
		"jsonb_object_agg_unique", "bool_and", "bool_or", "every", "bit_and", "bit_or", "bit_xor",
		"stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "corr",
		"covar_pop", "covar_samp", "regr_avgx", "regr_avgy", "regr_count", "regr_intercept",
		"regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy", "percentile_cont",
		"percentile_disc", "mode", "xmlagg", "range_agg", "range_intersect_agg", "any_value",
		"row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
		"first_value", "last_value", "nth_value", "cube", "rollup",
		// Date and time.
		"now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday",
		"date_trunc", "date_part", "date_bin", "extract", "age", "make_date", "make_time",
		"make_timestamp", "make_timestamptz", "make_interval", "to_timestamp", "to_date",
		"to_char", "to_number", "justify_days", "justify_hours", "justify_interval", "isfinite",
		"date_add", "date_subtract", "timezone", "overlaps",
		// Strings and bytes.
		"lower", "upper", "initcap", "length", "char_length", "character_length", "octet_length",
		"bit_length", "bit_count", "substr", "substring", "left", "right", "lpad", "rpad", "ltrim",
		"rtrim", "btrim", "replace", "reverse", "repeat", "split_part", "strpos", "position",
		"concat", "concat_ws", "format", "md5", "sha224", "sha256", "sha384", "sha512", "crc32",
		"crc32c", "encode", "decode", "convert", "convert_from", "convert_to", "quote_ident",
		"quote_literal", "quote_nullable", "regexp_replace", "regexp_match", "regexp_matches",
		"regexp_split_to_array", "regexp_split_to_table", "regexp_count", "regexp_instr",
		"regexp_like", "regexp_substr", "starts_with", "translate", "ascii", "chr", "to_hex",
		"to_bin", "to_oct", "to_ascii", "unistr", "string_to_array", "string_to_table",
		"array_to_string", "overlay", "normalize", "is_normalized", "casefold", "like", "ilike",
		"get_byte", "get_bit", "set_byte", "set_bit", "text", "textlen",
		// Numbers.
		"abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "sqrt", "cbrt", "exp", "ln",
		"log", "log10", "power", "pow", "mod", "div", "pi", "degrees", "radians", "sin", "cos",
		"tan", "cot", "asin", "acos", "atan", "atan2", "sind", "cosd", "tand", "sinh", "cosh",
		"tanh", "random", "random_normal", "width_bucket", "gcd", "lcm", "factorial", "scale",
		"min_scale", "trim_scale", "int2", "int4", "int8", "float4", "float8", "bool", "date",
		"timestamptz", "inet", "cidr", "oid", "name", "regclass", "regtype", "bpchar",
		"to_regclass", "to_regtype", "to_regproc", "to_regprocedure", "to_regnamespace",
		"to_regrole", "to_regtypemod", "num_nulls", "num_nonnulls",
		// UUIDs.
		"gen_random_uuid", "uuidv4", "uuidv7", "uuid_extract_timestamp", "uuid_extract_version",
		// Arrays and sets.
		"array_length", "array_lower", "array_upper", "array_ndims", "array_dims",
		"array_position", "array_positions", "array_append", "array_prepend", "array_cat",
		"array_remove", "array_replace", "array_fill", "array_to_json", "array_reverse",
		"array_sort", "trim_array", "cardinality", "unnest", "generate_series",
		"generate_subscripts",
		// JSON.
		"to_json", "to_jsonb", "json_build_object", "jsonb_build_object", "json_build_array",
		"jsonb_build_array", "json_object", "jsonb_object", "json_array_length",
		"jsonb_array_length", "json_each", "jsonb_each", "json_each_text", "jsonb_each_text",
		"json_extract_path", "jsonb_extract_path", "json_extract_path_text",
		"jsonb_extract_path_text", "json_object_keys", "jsonb_object_keys",
		"json_populate_record", "jsonb_populate_record", "json_populate_recordset",
		"jsonb_populate_recordset", "json_to_record", "jsonb_to_record", "json_to_recordset",
		"jsonb_to_recordset", "json_array_elements", "jsonb_array_elements",
		"json_array_elements_text", "jsonb_array_elements_text", "json_typeof", "jsonb_typeof",
		"json_strip_nulls", "jsonb_strip_nulls", "jsonb_set", "jsonb_set_lax", "jsonb_insert",
		"jsonb_pretty", "jsonb_path_query", "jsonb_path_query_array", "jsonb_path_query_first",
		"jsonb_path_exists", "jsonb_path_match", "jsonb_path_query_tz",
		"jsonb_path_query_array_tz", "jsonb_path_query_first_tz", "jsonb_path_exists_tz",
		"jsonb_path_match_tz", "row_to_json", "jsonb",
		// Text search.
		"to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery",
		"websearch_to_tsquery", "ts_rank", "ts_rank_cd", "ts_headline", "setweight", "strip",
		"numnode", "querytree", "tsvector_to_array", "array_to_tsvector",
		// Ranges and networks.
		"isempty", "lower_inc", "upper_inc", "lower_inf", "upper_inf", "range_merge",
		"int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange", "host",
		"hostmask", "masklen", "netmask", "network", "broadcast", "family", "inet_same_family",
		"inet_merge", "set_masklen", "abbrev",
		// The session, the server and the catalogs.
		"version", "current_setting", "current_database", "current_schema", "current_schemas",
		"pg_backend_pid", "inet_server_addr", "inet_server_port", "inet_client_addr",
		"inet_client_port", "pg_postmaster_start_time", "pg_conf_load_time",
		"pg_last_wal_replay_lsn", "pg_last_wal_receive_lsn",
		"pg_last_xact_replay_timestamp", "pg_is_wal_replay_paused",
		"pg_get_wal_replay_pause_state", "pg_wal_lsn_diff", "pg_size_pretty", "pg_size_bytes",
		"pg_database_size", "pg_relation_size", "pg_table_size", "pg_indexes_size",
		"pg_total_relation_size", "pg_column_size", "pg_typeof", "format_type",
		"pg_get_viewdef", "pg_get_indexdef", "pg_get_constraintdef", "pg_get_functiondef",
		"pg_get_function_arguments", "pg_get_function_result",
		"pg_get_function_identity_arguments", "pg_get_triggerdef", "pg_get_ruledef",
		"pg_get_expr", "pg_get_userbyid", "pg_get_serial_sequence", "pg_get_keywords",
		"pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible",
		"has_table_privilege", "has_column_privilege", "has_any_column_privilege",
		"has_schema_privilege", "has_database_privilege", "has_function_privilege",
		"has_sequence_privilege", "pg_has_role", "obj_description", "col_description",
		"shobj_description", "pg_encoding_to_char", "pg_char_to_encoding", "pg_client_encoding",
		"pg_sleep", "pg_sleep_for", "pg_sleep_until", "pg_tablespace_location",
		"pg_relation_filenode", "pg_relation_filepath", "pg_trigger_depth", "pg_jit_available",
		"pg_input_is_valid", "pg_input_error_info", "pg_column_compression",
		"pg_xact_commit_timestamp", "mxid_age",
	} {
		m[n] = builtin{}
	}
	return m
}()

// builtinPrefix reports the writers known by how their names start: the advisory lock functions
// (session-level locks taken on a standby do not exclude the primary's sessions) and the large
// object functions.
func builtinPrefix(name []byte) (builtin, bool) {
	switch {
	case hasPrefix(name, "pg_advisory_"), hasPrefix(name, "pg_try_advisory_"):
		return builtin{write: true, reason: ReasonAdvisoryLock, force: true}, true
	case hasPrefix(name, "lo_"):
		return builtin{write: true, reason: ReasonLargeObject}, true
	}
	return builtin{}, false
}

func hasPrefix(b []byte, s string) bool { return len(b) >= len(s) && string(b[:len(s)]) == s }
