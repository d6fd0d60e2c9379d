package check

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/exo-sendmail/exo-sendmail/failure"
	"software.sslmate.com/src/go-pkcs12"
)

// expirySoon is when an expiring certificate is worth a warning.
const expirySoon = 30 * 24 * time.Hour

// maxCredentialFile bounds what is read of a credential file, as the token
// package does.
const maxCredentialFile = 1 << 20

// guid is the shape of a Secret ID, which administrators paste instead of
// the secret's Value (AADSTS7000215).
var guid = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// credentials checks the files the token source will read. false: no
// token can be fetched with them.
func (c *checker) credentials() bool {
	a := c.a
	if a.ClientSecretFile != "" {
		return c.secretFile()
	}
	return c.certificate()
}

// credential is a credential file as the token source reads it.
type credential struct {
	what, step string // "client secret file", "secret"
	path       string // the file read: a systemd credential of the same name wins
	systemd    bool
	data       []byte
	mode       fs.FileMode
	owner      string
	gid        int // the file's group
}

// readCredential reads a configured credential file, reporting a failure
// when it cannot be read.
func (c *checker) readCredential(step, what, configured string) (*credential, bool) {
	cr := &credential{what: what, step: step, path: configured}
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		if p := filepath.Join(dir, filepath.Base(configured)); exists(p) {
			cr.path, cr.systemd = p, true
		}
	}
	f, err := os.Open(cr.path)
	if err == nil {
		defer f.Close()
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil {
			cr.mode = fi.Mode()
			cr.owner = ownerOf(fi)
			cr.gid = -1
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				cr.gid = int(st.Gid)
			}
			if !fi.Mode().IsRegular() {
				err = errors.New("not a regular file")
			}
		}
		if err == nil {
			cr.data, err = io.ReadAll(io.LimitReader(f, maxCredentialFile+1))
			if err == nil && len(cr.data) > maxCredentialFile {
				err = errors.New("larger than 1 MiB")
			}
		}
	}
	switch {
	case err == nil:
		return cr, true
	case errors.Is(err, fs.ErrNotExist):
		c.r.fail(failure.Config, step, fmt.Sprintf("%s %s does not exist", what, cr.path),
			"create it, or fix the path in "+configName(c.cfg))
	case errors.Is(err, fs.ErrPermission):
		c.r.fail(failure.Config, step, fmt.Sprintf("%s %s is not readable by %s", what, cr.path, whoami()),
			"the flusher reads it as the service user: chown it to that user and chmod 0600 (a file passed by systemd LoadCredential= is visible only inside the service)")
	default:
		c.r.fail(failure.Config, step, fmt.Sprintf("cannot read %s %s: %v", what, cr.path, unwrapPath(err)), "")
	}
	return nil, false
}

// private warns when a file holding a secret is readable by others than
// its owner and the service user. Group read is fine when the group is the
// service user's own (the packaged layout: 0640 root:exo-sendmail; check
// runs as the service user).
func (c *checker) private(cr *credential) {
	groupOK := cr.gid == os.Getgid() && cr.mode.Perm()&0o004 == 0
	if cr.mode.Perm()&0o044 != 0 && !groupOK {
		c.r.warn(cr.step, fmt.Sprintf("%s %s holds a secret but is readable by %s (mode %04o)", cr.what, cr.path, readers(cr.mode), cr.mode.Perm()),
			fmt.Sprintf("chmod 0600 %s", cr.path))
	}
}

func (cr *credential) describe() string {
	s := fmt.Sprintf("%s, mode %04o, owner %s", cr.path, cr.mode.Perm(), cr.owner)
	if cr.systemd {
		s += " (systemd credential)"
	}
	return s
}

// secretFile checks client_secret_file: readable, private, not empty, and
// not a Secret ID.
func (c *checker) secretFile() bool {
	cr, ok := c.readCredential("secret", "client secret file", c.a.ClientSecretFile)
	if !ok {
		return false
	}
	secret := strings.TrimRight(string(cr.data), "\r\n")
	c.r.secret(secret)
	c.r.secret(strings.TrimSpace(secret))
	if secret == "" {
		c.r.fail(failure.Config, "secret", fmt.Sprintf("client secret file %s is empty", cr.path),
			"put the secret's Value (not its Secret ID) from Entra > App registrations > Certificates & secrets into it")
		return false
	}
	c.r.ok("secret", "%s", cr.describe())
	c.private(cr)
	switch {
	case guid.MatchString(strings.TrimSpace(secret)):
		c.r.warn("secret", fmt.Sprintf("client secret file %s holds a GUID: that is the shape of a Secret ID, not of a secret's Value", cr.path),
			"copy the Value column (shown only when the secret is created; else add a new secret) from Entra > App registrations > Certificates & secrets")
	case strings.TrimSpace(secret) != secret || strings.ContainsAny(secret, "\"'"):
		c.r.warn("secret", fmt.Sprintf("client secret file %s holds spaces or quotes around the secret, which are sent as part of it", cr.path),
			"keep only the secret's Value in the file")
	}
	return true
}

// certificate checks certificate_file (PEM or PKCS#12) and private_key_file:
// readable, the key private, a certificate and an RSA key that belong
// together, and the certificate in date.
func (c *checker) certificate() bool {
	a := c.a
	cr, ok := c.readCredential("certificate", "certificate file", a.CertificateFile)
	if !ok {
		return false
	}
	// Files holding a key or password are warned about after the step's
	// result, even when it failed.
	var private []*credential
	defer func() {
		for _, p := range private {
			c.private(p)
		}
	}()
	var cert *x509.Certificate
	var key any
	var err error
	keyFrom := cr
	if bytes.Contains(cr.data, []byte("-----BEGIN ")) {
		cert, key, err = parsePEM(cr.data)
		if err != nil {
			c.r.fail(failure.Config, "certificate", fmt.Sprintf("certificate file %s: %v", cr.path, err),
				"give the PEM certificate uploaded to Entra and its unencrypted RSA key (PKCS#1 or PKCS#8), or a .pfx")
			return false
		}
		if key != nil {
			private = append(private, cr) // the key is in the certificate file
		}
		if a.PrivateKeyFile != "" {
			kr, ok := c.readCredential("key", "private key file", a.PrivateKeyFile)
			if !ok {
				return false
			}
			private = append(private, kr)
			if _, key, err = parsePEM(kr.data); err != nil || key == nil {
				if err == nil {
					err = errors.New("no PRIVATE KEY block")
				}
				c.r.fail(failure.Config, "key", fmt.Sprintf("private key file %s: %v", kr.path, err),
					"give the certificate's unencrypted PEM RSA key (PKCS#1 or PKCS#8)")
				return false
			}
			keyFrom = kr
		}
	} else {
		private = append(private, cr) // a .pfx holds the key
		password := ""
		if a.CertificatePasswordFile != "" {
			pr, ok := c.readCredential("password", "certificate password file", a.CertificatePasswordFile)
			if !ok {
				return false
			}
			private = append(private, pr)
			password = strings.TrimRight(string(pr.data), "\r\n")
			c.r.secret(password)
		}
		key, cert, _, err = pkcs12.DecodeChain(cr.data, password)
		if err != nil {
			c.r.fail(failure.Config, "certificate", fmt.Sprintf("cannot decode the PKCS#12 file %s: %v", cr.path, err),
				"give a .pfx/.p12 with the certificate and its key and set certificate_password_file to its password, or a PEM certificate and key")
			return false
		}
	}
	switch {
	case cert == nil:
		c.r.fail(failure.Config, "certificate", "no CERTIFICATE block in "+cr.path,
			"certificate_file must hold the certificate uploaded to Entra (PEM), or be a .pfx")
		return false
	case key == nil:
		c.r.fail(failure.Config, "key", "no private key for the certificate "+cr.path,
			"set private_key_file to the certificate's PEM private key")
		return false
	}
	rsaKey, isRSA := key.(*rsa.PrivateKey)
	if !isRSA {
		c.r.fail(failure.Config, "key", fmt.Sprintf("the private key in %s is %s, not RSA", keyFrom.path, keyKind(key)),
			"Entra's certificate credentials are signed PS256: create an RSA certificate and key (openssl req -x509 -newkey rsa:3072 ...) and upload the certificate")
		return false
	}
	if pub, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&rsaKey.PublicKey) {
		c.r.fail(failure.Config, "key", fmt.Sprintf("the private key in %s does not belong to the certificate in %s", keyFrom.path, cr.path),
			"give the key of the certificate uploaded to Entra (compare `openssl x509 -noout -pubkey` with `openssl pkey -pubout`)")
		return false
	}
	thumb := sha1.Sum(cert.Raw)
	id := fmt.Sprintf("%q, thumbprint %s", cert.Subject.CommonName, strings.ToUpper(hex.EncodeToString(thumb[:])))
	now := time.Now()
	switch {
	case now.Before(cert.NotBefore):
		c.r.fail(failure.Config, "certificate", fmt.Sprintf("certificate %s is valid only from %s", id, day(cert.NotBefore)),
			"check the host clock (NTP), or use a certificate valid now")
		return false
	case !now.Before(cert.NotAfter):
		c.r.fail(failure.Config, "certificate", fmt.Sprintf("certificate %s expired on %s", id, day(cert.NotAfter)),
			"create a new certificate, upload it in Entra > App registrations > Certificates & secrets, and replace "+cr.path)
		return false
	}
	c.r.ok("certificate", "%s, RSA %d bits, %s, expires %s (the thumbprint Entra lists for it)", cr.describe(), rsaKey.N.BitLen(), id, day(cert.NotAfter))
	if keyFrom != cr {
		c.r.ok("key", "%s, matches the certificate", keyFrom.describe())
	}
	if left := cert.NotAfter.Sub(now); left < expirySoon {
		c.r.warn("certificate", fmt.Sprintf("certificate %s expires on %s (in %d days)", id, day(cert.NotAfter), int(left.Hours()/24)),
			"create a new one, upload it in Entra > App registrations > Certificates & secrets, then replace "+cr.path)
	}
	return true
}

// parsePEM returns the first certificate and the first private key in data.
func parsePEM(data []byte) (cert *x509.Certificate, key any, err error) {
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
					return nil, nil, fmt.Errorf("bad certificate: %v", err)
				}
			}
		case "RSA PRIVATE KEY":
			if key == nil {
				if key, err = x509.ParsePKCS1PrivateKey(b.Bytes); err != nil {
					return nil, nil, errors.New("bad RSA private key")
				}
			}
		case "PRIVATE KEY":
			if key == nil {
				if key, err = x509.ParsePKCS8PrivateKey(b.Bytes); err != nil {
					return nil, nil, errors.New("bad PKCS#8 private key")
				}
			}
		case "EC PRIVATE KEY":
			if key == nil {
				if key, err = x509.ParseECPrivateKey(b.Bytes); err != nil {
					return nil, nil, errors.New("bad EC private key")
				}
			}
		case "ENCRYPTED PRIVATE KEY":
			return nil, nil, errors.New("the private key is encrypted (decrypt it: openssl pkey -in key.pem -out plain.pem, and keep it 0600)")
		}
	}
}

func keyKind(key any) string {
	switch key.(type) {
	case *ecdsa.PrivateKey:
		return "an ECDSA key"
	case ed25519.PrivateKey:
		return "an Ed25519 key"
	}
	return fmt.Sprintf("a %T", key)
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func ownerOf(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "?"
	}
	id := strconv.Itoa(int(st.Uid))
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	return "uid " + id
}

func readers(m fs.FileMode) string {
	switch p := m.Perm(); {
	case p&0o004 != 0:
		return "every user"
	case p&0o040 != 0:
		return "its group"
	}
	return "others"
}

// unwrapPath drops the path of a *fs.PathError: the caller names the file.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
