package token

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
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
	"syscall"
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

// File is a credential file as it was read.
type File struct {
	What    string      // "client secret file", "certificate file", "private key file" or "certificate password file"
	Path    string      // the file read (see CredentialPath)
	Systemd bool        // Path is a systemd credential
	Info    fs.FileInfo // of Path: its mode, owner and group; nil when it could not be opened
}

// CredentialPath returns the file read for a configured credential file:
// the systemd credential of the same base name when $CREDENTIALS_DIRECTORY
// holds one (systemd is then true), else the configured path.
func CredentialPath(configured string) (path string, systemd bool) {
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		p := filepath.Join(dir, filepath.Base(configured))
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
	}
	return configured, false
}

// CredentialError is the cause (the Err) of the *failure.Error returned for
// a credential that cannot be used: what is wrong, and in which file.
type CredentialError struct {
	Part string // what is wrong: "secret", "certificate", "key" or "password"
	File *File  // the file concerned
	// Err says what is wrong with it. For a file that could not be read it
	// is the file system's error (errors.Is fs.ErrNotExist, fs.ErrPermission).
	Err error
}

func (e *CredentialError) Error() string {
	return e.File.What + " " + e.File.Path + ": " + e.Err.Error()
}
func (e *CredentialError) Unwrap() error { return e.Err }

// unusable returns the configuration error about part of a credential in f.
func unusable(part string, f *File, cause error, reply, remedy string) *failure.Error {
	return &failure.Error{Class: failure.Config, Reply: reply, Remedy: remedy,
		Err: &CredentialError{Part: part, File: f, Err: cause}}
}

// readCredential reads a configured credential file (or its systemd
// credential); what names it, part is what of the credential it holds.
// The File is returned also when it could not be read.
func readCredential(part, what, configured string) (*File, []byte, error) {
	f := &File{What: what}
	f.Path, f.Systemd = CredentialPath(configured)
	data, err := f.read()
	if err != nil {
		return f, nil, unusable(part, f, err, fmt.Sprintf("cannot read the %s %s: %v", what, f.Path, err), unreadableRemedy)
	}
	return f, data, nil
}

// read reads f.Path, at most maxCredentialFile bytes, and sets f.Info.
// The errors do not repeat the path.
func (f *File) read() ([]byte, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	fd, err := os.OpenFile(f.Path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer fd.Close()
	if f.Info, err = fd.Stat(); err != nil {
		return nil, unwrapPath(err)
	}
	if !f.Info.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(fd, maxCredentialFile+1))
	switch {
	case err != nil:
		return nil, unwrapPath(err)
	case len(data) > maxCredentialFile:
		return nil, errors.New("larger than 1 MiB")
	}
	return data, nil
}

// unwrapPath drops the path of a *fs.PathError: the caller names the file.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// ReadSecret reads the client secret from its configured file (or the
// systemd credential of the same name), trailing line ends removed. The
// File is returned also with an error, when the file was found.
func ReadSecret(configured string) (string, *File, error) {
	f, data, err := readCredential("secret", "client secret file", configured)
	if err != nil {
		return "", f, err
	}
	secret := string(bytes.TrimRight(data, "\r\n"))
	if secret == "" {
		return "", f, unusable("secret", f, errors.New("empty"),
			fmt.Sprintf("the client secret file %s is empty", f.Path),
			"put the secret's Value (not its Secret ID) from Entra > App registrations > Certificates & secrets into it")
	}
	return secret, f, nil
}

// Certificate is a certificate credential: the certificate registered in
// Entra, its private key, and the files they came from.
type Certificate struct {
	Cert     *x509.Certificate
	Key      *rsa.PrivateKey
	CertFile *File // the certificate file
	KeyFile  *File // the file the key came from: the private key file, or CertFile (a PEM with the key, a PKCS#12)
	// Secrets are the files read that hold a key or a password, for a
	// caller that checks who may read them; kept also after an error.
	Secrets []*File
}

// LoadCertificate reads a PEM certificate (with its key in the same file or
// in keyFile) or a PKCS#12 file (with the password in passwordFile, if
// any), after the systemd credential lookup of CredentialPath, and checks
// that the key is RSA and belongs to the certificate. keyFile is used only
// with a PEM certificate, passwordFile only with a PKCS#12 one.
//
// Errors are configuration errors whose cause is a *CredentialError. The
// Certificate is never nil: after an error its Cert and Key are nil, and
// its files are those read before the error.
func LoadCertificate(certFile, keyFile, passwordFile string) (*Certificate, error) {
	c := &Certificate{}
	return c, c.load(certFile, keyFile, passwordFile)
}

func (c *Certificate) load(certFile, keyFile, passwordFile string) error {
	cf, data, err := readCredential("certificate", "certificate file", certFile)
	c.CertFile = cf
	if err != nil {
		return err
	}
	var cert *x509.Certificate
	var key any
	keyFrom := cf
	if bytes.Contains(data, []byte("-----BEGIN ")) {
		if cert, key, err = parsePEM("certificate", cf, data); err != nil {
			return err
		}
		if key != nil {
			c.Secrets = append(c.Secrets, cf)
		}
		if keyFile != "" {
			kf, keyData, err := readCredential("key", "private key file", keyFile)
			if err != nil {
				return err
			}
			c.Secrets = append(c.Secrets, kf)
			if _, key, err = parsePEM("key", kf, keyData); err != nil {
				return err
			}
			if key == nil {
				return unusable("key", kf, errors.New("no private key"), "no private key in the private key file "+kf.Path,
					"give the certificate's unencrypted PEM RSA key (PKCS#1 or PKCS#8)")
			}
			keyFrom = kf
		}
		if cert == nil {
			return unusable("certificate", cf, errors.New("no certificate"), "no CERTIFICATE block in "+cf.Path,
				"certificate_file must hold the PEM certificate uploaded to Entra (or be a .pfx)")
		}
		if key == nil {
			return unusable("key", cf, errors.New("no private key"), "no private key for the certificate "+cf.Path,
				"set private_key_file to the certificate's PEM private key")
		}
	} else {
		c.Secrets = append(c.Secrets, cf) // a PKCS#12 file holds the key
		password := ""
		if passwordFile != "" {
			pf, p, err := readCredential("password", "certificate password file", passwordFile)
			if err != nil {
				return err
			}
			c.Secrets = append(c.Secrets, pf)
			password = string(bytes.TrimRight(p, "\r\n"))
		}
		if key, cert, _, err = pkcs12.DecodeChain(data, password); err != nil {
			return unusable("certificate", cf, err, fmt.Sprintf("cannot decode the PKCS#12 file %s: %v", cf.Path, err),
				"give a .pfx/.p12 holding the certificate and its key, with certificate_password_file holding its password, or a PEM certificate and key")
		}
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return unusable("key", keyFrom, errors.New("not RSA"), fmt.Sprintf("the private key in %s is %s, not RSA", keyFrom.Path, keyKind(key)),
			"Entra's certificate credentials are signed PS256: create an RSA certificate and key (openssl req -x509 -newkey rsa:3072 ...) and upload the certificate")
	}
	if pub, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&rsaKey.PublicKey) {
		return unusable("key", keyFrom, errors.New("not the certificate's key"),
			fmt.Sprintf("the private key in %s does not belong to the certificate in %s", keyFrom.Path, cf.Path),
			"give the key of the certificate uploaded to Entra (compare `openssl x509 -noout -pubkey` with `openssl pkey -pubout`)")
	}
	c.Cert, c.Key, c.KeyFile = cert, rsaKey, keyFrom
	return nil
}

// parsePEM returns the first certificate and the first private key in the
// PEM data of f; part is what f holds. Other blocks (chain certificates,
// parameters) are skipped.
func parsePEM(part string, f *File, data []byte) (cert *x509.Certificate, key any, err error) {
	bad := func(what string, err error) (*x509.Certificate, any, error) {
		return nil, nil, unusable(part, f, err, fmt.Sprintf("cannot parse the %s in %s: %v", what, f.Path, err),
			"give a PEM certificate and an unencrypted PEM RSA key (PKCS#1 or PKCS#8), or a .pfx")
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
		case "EC PRIVATE KEY": // parsed to be refused by name: not RSA
			if key == nil {
				if key, err = x509.ParseECPrivateKey(b.Bytes); err != nil {
					return bad("private key", err)
				}
			}
		case "ENCRYPTED PRIVATE KEY":
			return nil, nil, unusable(part, f, errors.New("encrypted private key"), "the private key in "+f.Path+" is encrypted",
				"decrypt it (openssl pkey -in key.pem -out plain.pem) and keep it readable only by the service user, or use a .pfx with certificate_password_file")
		}
	}
}

// keyKind names a private key's algorithm for a person.
func keyKind(key any) string {
	switch key.(type) {
	case *ecdsa.PrivateKey:
		return "an ECDSA key"
	case ed25519.PrivateKey:
		return "an Ed25519 key"
	}
	return fmt.Sprintf("a %T", key)
}

// assertion returns a client assertion JWT as Entra documents it today:
// PS256, x5t#S256 = base64url(SHA-256(certificate DER)), aud = token
// endpoint, iss = sub = client ID, a fresh jti, valid from now for 5 minutes.
func (c *Certificate) assertion(tokenURL, clientID string, now time.Time) (string, error) {
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
	thumb := sha256.Sum256(c.Cert.Raw)
	t.Header["x5t#S256"] = base64.RawURLEncoding.EncodeToString(thumb[:])
	signed, err := t.SignedString(c.Key)
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
