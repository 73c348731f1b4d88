package secret

import (
	"crypto/md5"
	"encoding/hex"
	"strings"
)

// MD5Hash is PostgreSQL's stored md5 hash of password for user (pg_authid.rolpassword with
// password_encryption = md5): "md5" + hex(md5(password + user)).
func MD5Hash(user, password string) string {
	h := md5.Sum([]byte(password + user))
	return "md5" + hex.EncodeToString(h[:])
}

// MD5Response is the client's answer to AuthenticationMD5Password with salt, made from the stored
// hash ("md5" + 32 hex digits, as MD5Hash returns): "md5" + hex(md5(hash[3:] + salt)) (PostgreSQL
// docs, 53.2.2 "Password Authentication"). So the hash alone answers the challenge: it is as good
// as the password to anyone who may log in with md5, and must be kept as secret.
func MD5Response(hash string, salt [4]byte) string {
	h := md5.Sum(append([]byte(strings.TrimPrefix(hash, "md5")), salt[:]...))
	return "md5" + hex.EncodeToString(h[:])
}
