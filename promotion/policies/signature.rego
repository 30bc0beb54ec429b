# Gate `signature`: the OMS signature verifies over the blobs in the source data zone, and the signer is allowed.
package sovra.gates.signature

import rego.v1

deny contains msg if {
	not input.signature.verified
	msg := sprintf("the OMS signature does not verify: %s", [input.signature.error])
}

deny contains msg if {
	not input.signer.allowed
	msg := sprintf("signer key %s is not among the allowed signers (%s); sign with an allowed key or add it under `signers` in the promotion config", [input.signer.hint, concat(", ", input.signer.allowed_names)])
}
