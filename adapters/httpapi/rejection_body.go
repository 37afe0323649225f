package httpapi

import (
	"encoding/base64"
	"fmt"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
)

// rejectionBody returns the body of a reported rejection (body as text or
// body_base64), or a message saying why it is refused.
func rejectionBody(req apitypes.RejectionRequest) ([]byte, string) {
	body := []byte(req.Body)
	switch {
	case req.Body != "" && req.BodyBase64 != "":
		return nil, "give body or body_base64, not both"
	case req.BodyBase64 != "":
		b, err := base64.StdEncoding.DecodeString(req.BodyBase64)
		if err != nil {
			return nil, "body_base64 is not standard base64 (RFC 4648)"
		}
		body = b
	}
	if len(body) > domain.MaxRejectionBody {
		return nil, fmt.Sprintf("the body is %d bytes, at most %d; send its first %d bytes (a body rule never matches a longer body)",
			len(body), domain.MaxRejectionBody, domain.MaxRejectionBody)
	}
	return body, ""
}
