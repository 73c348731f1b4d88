package rdsiam

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Example credentials from the AWS documentation: they sign, they open nothing.
const (
	testAccessKey = "AKIAIOSFODNN7EXAMPLE"
	testSecretKey = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

// StaticCredentials makes the standard chain resolve to testAccessKey from the environment,
// with nothing else to find (no shared files, no instance metadata), so no test reaches the
// network. It uses t.Setenv: the test must not be parallel.
func StaticCredentials(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"config", "credentials"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":                      testAccessKey,
		"AWS_SECRET_ACCESS_KEY":                  testSecretKey,
		"AWS_SESSION_TOKEN":                      "",
		"AWS_PROFILE":                            "",
		"AWS_CONFIG_FILE":                        filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE":            filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":              "true",
		"AWS_WEB_IDENTITY_TOKEN_FILE":            "",
		"AWS_ROLE_ARN":                           "",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI":     "",
	} {
		t.Setenv(k, v)
	}
}

// TestCredentialChainToken: with static credentials from the environment, a token is the
// presigned URL RDS expects, for that endpoint, user and region, and its signature is the SigV4
// signature of its own contents (recomputed here from the specification, not by the SDK).
func TestCredentialChainToken(t *testing.T) {
	StaticCredentials(t)
	build := CredentialChain()
	before := time.Now().UTC().Add(-time.Second)
	tok, err := build(t.Context(), "db-1.abc123.eu-west-1.rds.amazonaws.com:5432", "eu-west-1", "app user")
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().UTC().Add(time.Second)
	CheckToken(t, tok, "db-1.abc123.eu-west-1.rds.amazonaws.com:5432", "eu-west-1", "app user", before, after)

	// The chain is kept per region: another region signs with its own scope.
	tok2, err := build(t.Context(), "127.0.0.1:6543", "us-east-1", "app")
	if err != nil {
		t.Fatal(err)
	}
	CheckToken(t, tok2, "127.0.0.1:6543", "us-east-1", "app", before, time.Now().UTC().Add(time.Second))

	if _, err := build(t.Context(), "db-1.abc123.eu-west-1.rds.amazonaws.com", "eu-west-1", "app"); err == nil {
		t.Error("an endpoint without a port made a token")
	}
}

// TestCredentialChainNoCredentials: with no credentials anywhere the build fails with the SDK's
// explanation, and fails again (nothing cached) rather than hanging on instance metadata.
func TestCredentialChainNoCredentials(t *testing.T) {
	StaticCredentials(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	build := CredentialChain()
	for range 2 {
		_, err := build(t.Context(), "127.0.0.1:5432", "eu-west-1", "app")
		if err == nil || !strings.Contains(err.Error(), "credentials") {
			t.Fatalf("got %v, want an error about credentials", err)
		}
	}
}

// CheckToken parses tok as a presigned RDS connect URL and checks every part, then the
// signature.
func CheckToken(t *testing.T, tok, endpoint, region, user string, notBefore, notAfter time.Time) {
	t.Helper()
	u, err := url.Parse("https://" + tok)
	if err != nil {
		t.Fatalf("token does not parse as a URL: %v", err)
	}
	// The SDK writes host:port?Action=…; the AWS CLI host:port/?Action=…. Both sign the
	// canonical URI "/".
	if u.Host != endpoint || (u.Path != "" && u.Path != "/") || u.User != nil || u.Fragment != "" {
		t.Errorf("token is for host %q path %q, want %q and / (or none)", u.Host, u.Path, endpoint)
	}
	q := u.Query()
	var keys []string
	for k, v := range q {
		keys = append(keys, k)
		if len(v) != 1 {
			t.Errorf("%s given %d times", k, len(v))
		}
	}
	slices.Sort(keys)
	want := []string{"Action", "DBUser", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
		"X-Amz-Expires", "X-Amz-Signature", "X-Amz-SignedHeaders"}
	if !slices.Equal(keys, want) {
		t.Errorf("query parameters %v, want %v", keys, want)
	}
	date, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	if err != nil {
		t.Errorf("X-Amz-Date %q: %v", q.Get("X-Amz-Date"), err)
	} else if date.Before(notBefore.Truncate(time.Second)) || date.After(notAfter) {
		t.Errorf("X-Amz-Date %v, want between %v and %v", date, notBefore, notAfter)
	}
	for k, v := range map[string]string{
		"Action":              "connect",
		"DBUser":              user,
		"X-Amz-Algorithm":     "AWS4-HMAC-SHA256",
		"X-Amz-Credential":    testAccessKey + "/" + date.Format("20060102") + "/" + region + "/rds-db/aws4_request",
		"X-Amz-Expires":       "900", // Lifetime
		"X-Amz-SignedHeaders": "host",
	} {
		if got := q.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if time.Duration(900)*time.Second != Lifetime {
		t.Errorf("Lifetime %v is not the token's X-Amz-Expires", Lifetime)
	}
	sig := q.Get("X-Amz-Signature")
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sig) {
		t.Fatalf("X-Amz-Signature %q is not 64 hex digits", sig)
	}
	if want := sigV4(u, date, region); sig != want {
		t.Errorf("X-Amz-Signature %s, want %s (SigV4 of the token's own contents)", sig, want)
	}
}

// sigV4 computes the SigV4 query-string signature of a presigned GET of u (its signature
// parameter left out) for the rds-db service, as the AWS General Reference's "Create a signed
// AWS API request" describes: a canonical request, a string to sign, a key derived by HMAC from
// the secret key, date, region and service.
func sigV4(u *url.URL, date time.Time, region string) string {
	q := u.Query()
	q.Del("X-Amz-Signature")
	canonicalQuery := strings.ReplaceAll(q.Encode(), "+", "%20") // url.Values sorts by key
	const emptyPayload = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	canonical := strings.Join([]string{"GET", "/", canonicalQuery, "host:" + u.Host + "\n", "host", emptyPayload}, "\n")
	sum := sha256.Sum256([]byte(canonical))
	scope := date.Format("20060102") + "/" + region + "/rds-db/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + date.Format("20060102T150405Z") + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := []byte("AWS4" + testSecretKey)
	for _, part := range []string{date.Format("20060102"), region, "rds-db", "aws4_request", toSign} {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(part))
		key = h.Sum(nil)
	}
	return hex.EncodeToString(key)
}
