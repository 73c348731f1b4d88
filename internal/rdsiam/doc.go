// Package rdsiam owns the RDS IAM auth tokens pgtide logs in to servers with, for the users the
// users file marks iam = true: one token per (node endpoint, user), built from the standard AWS
// credential chain (CredentialChain), cached, and rebuilt in the background before it expires so
// that a dial takes a ready token instead of waiting for the chain.
//
// A token is a presigned URL (host:port/?Action=connect&DBUser=…&X-Amz-…&X-Amz-Signature=…) that
// RDS accepts as the user's password for 15 minutes after it is signed (Lifetime). It is a bearer
// secret: it is never logged, never put in an error, and pgtide sends it only as a cleartext
// password over TLS (see package pool's DialOptions.RequireTLS and package cluster's Config.Token).
package rdsiam
