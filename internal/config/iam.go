package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// AWS configures what pgtide needs of AWS: the region RDS IAM auth tokens are signed for. AWS
// credentials never come from pgtide's configuration: they come from the standard AWS credential
// chain of the environment pgtide runs in (package rdsiam, CredentialChain).
type AWS struct {
	// Region is the cluster's AWS region ("us-east-1"): RDS IAM auth tokens are signed for it.
	// Required when a user has iam = true. Reloadable: the next login signs for the new region.
	Region string `toml:"region"`
}

// IAMUsers returns the names of the users that log in to the servers with RDS IAM auth tokens
// (iam = true in the users file), sorted.
func (c *Config) IAMUsers() []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(c.Users)) {
		if c.Users[name].IAM {
			out = append(out, name)
		}
	}
	return out
}

// validateIAM checks [aws] against the users' iam settings.
func (c *Config) validateIAM() []error {
	var errs []error
	iam := c.IAMUsers()
	if r := c.AWS.Region; r != "" && strings.Trim(r, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		errs = append(errs, fmt.Errorf("aws.region %q: not an AWS region name such as \"us-east-1\"", r))
	}
	if len(iam) > 0 && c.AWS.Region == "" {
		errs = append(errs, fmt.Errorf("aws.region is required: users %q log in to the servers with RDS IAM auth tokens (iam = true), which are signed for a region", iam))
	}
	if len(iam) > 0 {
		if err := checkIAMServerTLS(c.Cluster.ServerTLS); err != nil {
			errs = append(errs, fmt.Errorf("users %q have iam = true: %w", iam, err))
		}
	}
	return errs
}

// checkIAMServerTLS is the rule between iam users and cluster.server_tls: RDS IAM auth tokens are
// bearer secrets sent as cleartext passwords, so pgtide must never send one over a connection
// that may be unencrypted. "require", "verify-ca" and "verify-full" pass; "disable" and "prefer"
// (which falls back to plaintext when the server refuses TLS) and anything else do not. RDS
// also refuses IAM logins without TLS. (The dial enforces the same per connection: package pool,
// DialOptions.RequireTLS.)
func checkIAMServerTLS(serverTLS string) error {
	switch serverTLS {
	case "require", "verify-ca", "verify-full":
		return nil
	}
	return fmt.Errorf("cluster.server_tls must be \"require\", \"verify-ca\" or \"verify-full\" (RDS IAM auth tokens are sent only over TLS), not %q", serverTLS)
}
