// Wrapper module that builds the Pulumi CLI and Python language host at one
// pinned version (see scripts/versions.sh). Not part of the dbfleet program.
module dbfleet.local/tools/pulumi

go 1.20

require (
	github.com/pulumi/pulumi/pkg/v3 v3.79.0
	github.com/pulumi/pulumi/sdk/v3 v3.79.0
)

replace github.com/sergi/go-diff => github.com/sergi/go-diff v1.1.0

replace github.com/xanzy/ssh-agent => github.com/pulumi/ssh-agent v0.5.1
