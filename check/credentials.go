package check

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/exo-sendmail/exo-sendmail/conf"
	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/token"
)

// expirySoon is when an expiring certificate is worth a warning.
const expirySoon = 30 * 24 * time.Hour

// credentials checks the files the token source will read. false: no
// token can be fetched with them.
func (c *checker) credentials() bool {
	a := c.a
	if a.ClientSecretFile != "" {
		return c.secretFile()
	}
	return c.certificate()
}

// stepOf names the report's step for a credential file.
func stepOf(f *token.File) string {
	switch f.What {
	case "client secret file":
		return "secret"
	case "private key file":
		return "key"
	case "certificate password file":
		return "password"
	}
	return "certificate"
}

// credentialFailed reports a credential the token source cannot use: a file
// that cannot be read in the check's words (it knows the configuration and
// the user it runs as), anything else as the token package says it.
func (c *checker) credentialFailed(err error) {
	var ce *token.CredentialError
	if !errors.As(err, &ce) {
		c.r.failure("credentials", err)
		return
	}
	f := ce.File
	switch {
	case errors.Is(ce.Err, fs.ErrNotExist):
		c.r.fail(failure.Config, ce.Part, fmt.Sprintf("%s %s does not exist", f.What, f.Path),
			"create it, or fix the path in "+configName(c.cfg))
	case errors.Is(ce.Err, fs.ErrPermission):
		c.r.fail(failure.Config, ce.Part, fmt.Sprintf("%s %s is not readable by %s", f.What, f.Path, whoami()),
			"the flusher reads it as the service user: chown it to that user and chmod 0600 (a file passed by systemd LoadCredential= is visible only inside the service)")
	default:
		c.r.failure(ce.Part, err)
	}
}

// private warns when a file holding a secret is readable by others than
// its owner and the service user. Group read is fine when the group is the
// service user's own (the packaged layout: 0640 root:exo-sendmail; check
// runs as the service user).
func (c *checker) private(f *token.File) {
	if f.Info == nil {
		return
	}
	mode := f.Info.Mode()
	groupOK := groupOf(f.Info) == os.Getgid() && mode.Perm()&0o004 == 0
	if mode.Perm()&0o044 != 0 && !groupOK {
		c.r.warn(stepOf(f), fmt.Sprintf("%s %s holds a secret but is readable by %s (mode %04o)", f.What, f.Path, readers(mode), mode.Perm()),
			fmt.Sprintf("chmod 0600 %s", f.Path))
	}
}

// describe says which file was read, its mode and owner.
func describe(f *token.File) string {
	s := f.Path
	if f.Info != nil {
		s += fmt.Sprintf(", mode %04o, owner %s", f.Info.Mode().Perm(), ownerOf(f.Info))
	}
	if f.Systemd {
		s += " (systemd credential)"
	}
	return s
}

// secretFile checks client_secret_file: readable, private, not empty, and
// not a Secret ID.
func (c *checker) secretFile() bool {
	secret, f, err := token.ReadSecret(c.a.ClientSecretFile)
	c.r.secret(secret)
	c.r.secret(strings.TrimSpace(secret))
	if err != nil {
		c.credentialFailed(err)
		return false
	}
	c.r.ok("secret", "%s", describe(f))
	c.private(f)
	switch {
	case conf.IsGUID(strings.TrimSpace(secret)): // a Secret ID pasted instead of the Value
		c.r.warn("secret", fmt.Sprintf("client secret file %s holds a GUID: that is the shape of a Secret ID, not of a secret's Value", f.Path),
			"copy the Value column (shown only when the secret is created; else add a new secret) from Entra > App registrations > Certificates & secrets")
	case strings.TrimSpace(secret) != secret || strings.ContainsAny(secret, "\"'"):
		c.r.warn("secret", fmt.Sprintf("client secret file %s holds spaces or quotes around the secret, which are sent as part of it", f.Path),
			"keep only the secret's Value in the file")
	}
	return true
}

// certificate checks certificate_file (PEM or PKCS#12) and private_key_file
// as the token source loads them, and that the certificate is in date.
func (c *checker) certificate() bool {
	a := c.a
	cred, err := token.LoadCertificate(a.CertificateFile, a.PrivateKeyFile, a.CertificatePasswordFile)
	// Files holding a key or password are warned about after the step's
	// result, even when it failed.
	defer func() {
		for _, f := range cred.Secrets {
			c.private(f)
		}
	}()
	if err != nil {
		c.credentialFailed(err)
		return false
	}
	cert, path := cred.Cert, cred.CertFile.Path
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
			"create a new certificate, upload it in Entra > App registrations > Certificates & secrets, and replace "+path)
		return false
	}
	c.r.ok("certificate", "%s, RSA %d bits, %s, expires %s (the thumbprint Entra lists for it)", describe(cred.CertFile), cred.Key.N.BitLen(), id, day(cert.NotAfter))
	if cred.KeyFile != cred.CertFile {
		c.r.ok("key", "%s, matches the certificate", describe(cred.KeyFile))
	}
	if left := cert.NotAfter.Sub(now); left < expirySoon {
		c.r.warn("certificate", fmt.Sprintf("certificate %s expires on %s (in %d days)", id, day(cert.NotAfter), int(left.Hours()/24)),
			"create a new one, upload it in Entra > App registrations > Certificates & secrets, then replace "+path)
	}
	return true
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }

// groupOf returns the file's group, -1 when it is not known.
func groupOf(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Gid)
	}
	return -1
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
