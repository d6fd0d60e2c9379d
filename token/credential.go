package token

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/golang-jwt/jwt/v5"
	"software.sslmate.com/src/go-pkcs12"
)

// assertionLifetime is the exp of a client assertion; Entra allows 10 minutes.
const assertionLifetime = 5 * time.Minute

// maxCredentialFile bounds what we read from a credential file.
const maxCredentialFile = 1 << 20

const unreadableRemedy = "the file must exist and be readable only by the service user (chmod 0400 or 0600, owned by it), or be passed as a systemd credential"

// credentialPath returns the file to read for a configured credential file:
// the systemd credential of the same base name, when there is one.
func credentialPath(name string) string {
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		p := filepath.Join(dir, filepath.Base(name))
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return name
}

// readCredential reads a credential file; what names it for the error.
func readCredential(what, name string) ([]byte, error) {
	p := credentialPath(name)
	f, err := os.Open(p)
	if err == nil {
		defer f.Close()
		var data []byte
		data, err = io.ReadAll(io.LimitReader(f, maxCredentialFile+1))
		if err == nil && len(data) > maxCredentialFile {
			err = errors.New("larger than 1 MiB")
		}
		if err == nil {
			return data, nil
		}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is said once, below
	}
	return nil, &failure.Error{Class: failure.Config,
		Reply:  fmt.Sprintf("cannot read the %s %s: %v", what, p, err),
		Remedy: unreadableRemedy}
}

// readSecret returns the client secret with trailing line ends removed.
func readSecret(name string) (string, error) {
	data, err := readCredential("client secret file", name)
	if err != nil {
		return "", err
	}
	secret := string(bytes.TrimRight(data, "\r\n"))
	if secret == "" {
		return "", &failure.Error{Class: failure.Config,
			Reply:  fmt.Sprintf("the client secret file %s is empty", credentialPath(name)),
			Remedy: "put the secret's Value (not its Secret ID) from Entra > App registrations > Certificates & secrets into it"}
	}
	return secret, nil
}

// certificate is a certificate credential: the registered certificate and
// its private key.
type certificate struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
}

// loadCertificate reads a PEM certificate (with its key in the same file or
// in keyFile) or a PKCS#12 file, and checks that key and certificate match.
func loadCertificate(certFile, keyFile, passwordFile string) (*certificate, error) {
	data, err := readCredential("certificate file", certFile)
	if err != nil {
		return nil, err
	}
	certPath := credentialPath(certFile)
	var cert *x509.Certificate
	var key any
	names := certPath
	if bytes.Contains(data, []byte("-----BEGIN ")) {
		cert, key, err = parsePEM(data, certPath)
		if err != nil {
			return nil, err
		}
		if keyFile != "" {
			keyData, err := readCredential("private key file", keyFile)
			if err != nil {
				return nil, err
			}
			names = certPath + " and " + credentialPath(keyFile)
			if _, key, err = parsePEM(keyData, credentialPath(keyFile)); err != nil {
				return nil, err
			}
		}
		if cert == nil {
			return nil, &failure.Error{Class: failure.Config, Reply: "no CERTIFICATE block in " + certPath,
				Remedy: "certificate_file must hold the PEM certificate uploaded to Entra (or be a .pfx)"}
		}
		if key == nil {
			return nil, &failure.Error{Class: failure.Config, Reply: "no private key for the certificate " + certPath,
				Remedy: "set private_key_file to the certificate's PEM private key"}
		}
	} else {
		password := ""
		if passwordFile != "" {
			p, err := readCredential("certificate password file", passwordFile)
			if err != nil {
				return nil, err
			}
			password = string(bytes.TrimRight(p, "\r\n"))
		}
		key, cert, _, err = pkcs12.DecodeChain(data, password)
		if err != nil {
			return nil, &failure.Error{Class: failure.Config,
				Reply:  fmt.Sprintf("cannot decode the PKCS#12 file %s: %v", certPath, err),
				Remedy: "give a .pfx/.p12 holding the certificate and its key, with certificate_password_file holding its password, or a PEM certificate and key"}
		}
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, &failure.Error{Class: failure.Config, Reply: fmt.Sprintf("the private key in %s is %T, not RSA", names, key),
			Remedy: "Entra certificate credentials are signed PS256: use an RSA certificate and key"}
	}
	if pub, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&rsaKey.PublicKey) {
		return nil, &failure.Error{Class: failure.Config, Reply: fmt.Sprintf("the private key does not match the certificate in %s", names),
			Remedy: "give the key that belongs to the certificate uploaded to Entra (compare `openssl x509 -noout -pubkey` with `openssl pkey -pubout`)"}
	}
	return &certificate{cert: cert, key: rsaKey}, nil
}

// parsePEM returns the first certificate and the first private key in data.
// Other blocks (chain certificates, parameters) are skipped.
func parsePEM(data []byte, name string) (cert *x509.Certificate, key any, err error) {
	bad := func(what string, err error) (*x509.Certificate, any, error) {
		return nil, nil, &failure.Error{Class: failure.Config, Reply: fmt.Sprintf("cannot parse the %s in %s: %v", what, name, err),
			Remedy: "give a PEM certificate and an unencrypted PEM RSA key (PKCS#1 or PKCS#8), or a .pfx"}
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return cert, key, nil
		}
		switch b.Type {
		case "CERTIFICATE":
			if cert == nil {
				if cert, err = x509.ParseCertificate(b.Bytes); err != nil {
					return bad("certificate", err)
				}
			}
		case "RSA PRIVATE KEY":
			if key == nil {
				if key, err = x509.ParsePKCS1PrivateKey(b.Bytes); err != nil {
					return bad("private key", err)
				}
			}
		case "PRIVATE KEY":
			if key == nil {
				if key, err = x509.ParsePKCS8PrivateKey(b.Bytes); err != nil {
					return bad("private key", err)
				}
			}
		case "ENCRYPTED PRIVATE KEY":
			return nil, nil, &failure.Error{Class: failure.Config, Reply: "the private key in " + name + " is encrypted",
				Remedy: "decrypt it (openssl pkey -in key.pem -out plain.pem) and keep it readable only by the service user, or use a .pfx with certificate_password_file"}
		}
	}
}

// assertion returns a client assertion JWT as Entra documents it today:
// PS256, x5t#S256 = base64url(SHA-256(certificate DER)), aud = token
// endpoint, iss = sub = client ID, a fresh jti, valid from now for 5 minutes.
func (c *certificate) assertion(tokenURL, clientID string, now time.Time) (string, error) {
	jti, err := newUUID()
	if err != nil {
		return "", &failure.Error{Class: failure.Temporary, Reply: "client assertion: " + err.Error(), Err: err}
	}
	t := jwt.NewWithClaims(jwt.SigningMethodPS256, jwt.MapClaims{
		"aud": tokenURL,
		"iss": clientID,
		"sub": clientID,
		"jti": jti,
		"nbf": now.Unix(),
		"iat": now.Unix(),
		"exp": now.Add(assertionLifetime).Unix(),
	})
	thumb := sha256.Sum256(c.cert.Raw)
	t.Header["x5t#S256"] = base64.RawURLEncoding.EncodeToString(thumb[:])
	signed, err := t.SignedString(c.key)
	if err != nil {
		return "", &failure.Error{Class: failure.Config, Reply: "cannot sign the client assertion: " + err.Error(), Err: err}
	}
	return signed, nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}
