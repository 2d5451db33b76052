"""The AWS provider (EC2 through boto3), one module per concept; the provider itself is
:class:`cdpipe.providers.aws.provider.Ec2Provider`."""
