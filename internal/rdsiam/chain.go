package rdsiam

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	rdsauth "github.com/aws/aws-sdk-go-v2/feature/rds/auth"
)

// CredentialChain returns a BuildFunc that signs tokens with rdsauth.BuildAuthToken and
// credentials from the AWS SDK's default chain, in its order: the environment
// (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), the shared config and
// credentials files (AWS_PROFILE, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE), web identity
// (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, as on EKS), the ECS container credentials
// endpoint and the EC2 instance profile. pgtide's own configuration never holds AWS credentials.
//
// The chain is loaded at the first build for each region (config.LoadDefaultConfig reads the
// environment and files; it does not reach the network) and kept for the process's life; the
// SDK caches the credentials it retrieves until they expire, so a build is normally a local
// signature and reaches the network (instance metadata, ECS, STS) only to renew credentials.
// Loading errors (a malformed shared config file) are not kept: the next build tries again.
func CredentialChain() BuildFunc {
	var mu sync.Mutex
	providers := map[string]aws.CredentialsProvider{} // by region; guarded by mu
	return func(ctx context.Context, endpoint, region, user string) (string, error) {
		mu.Lock()
		creds := providers[region]
		if creds == nil {
			cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
			if err != nil {
				mu.Unlock()
				return "", fmt.Errorf("loading the AWS configuration: %w", err)
			}
			if cfg.Credentials == nil {
				mu.Unlock()
				return "", errors.New("the AWS configuration has no credential provider")
			}
			creds = cfg.Credentials
			providers[region] = creds
		}
		mu.Unlock()
		return rdsauth.BuildAuthToken(ctx, endpoint, region, user, creds)
	}
}
