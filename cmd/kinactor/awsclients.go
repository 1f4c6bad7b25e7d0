package main

import (
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
)

// dynamoClient is the DynamoDB client of the subcommands. Local DynamoDB
// servers omit the CRC32 header that real AWS sends, so its check is off
// when an endpoint is configured (by the environment or in cfg).
func dynamoClient(cfg aws.Config) *dynamodb.Client {
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if os.Getenv("AWS_ENDPOINT_URL_DYNAMODB") != "" || os.Getenv("AWS_ENDPOINT_URL") != "" || o.BaseEndpoint != nil {
			o.DisableValidateResponseChecksum = true
		}
	})
}
