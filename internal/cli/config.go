package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	wrenn "github.com/wrenn/wrenn/sdk/go"
)

// fileConfig is ~/.config/wrenn/config.json.
type fileConfig struct {
	APIURL string `json:"api_url,omitempty"`
	APIKey string `json:"api_key,omitempty"`
	// CACert is a PEM CA certificate file trusted for the API's HTTPS.
	CACert string `json:"ca_cert,omitempty"`
}

// configPath is $XDG_CONFIG_HOME/wrenn/config.json, else
// $HOME/.config/wrenn/config.json.
func (a *app) configPath() (string, error) {
	dir := a.env.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := a.env.Getenv("HOME")
		if home == "" {
			return "", errors.New("cannot find the config file: HOME is not set")
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "wrenn", "config.json"), nil
}

func (a *app) loadConfig() (fileConfig, error) {
	var c fileConfig
	p, err := a.configPath()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("config %s: %w", p, err)
	}
	return c, nil
}

// saveConfig writes the config file with mode 0600 (it holds a secret),
// replacing it atomically.
func (a *app) saveConfig(c fileConfig) (string, error) {
	p, err := a.configPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", fmt.Errorf("create config directory: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".config-*.json")
	if err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write config: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	return p, nil
}

// settings resolves the API address and key: flags over environment over
// the config file over the default address.
func (a *app) settings() (fileConfig, error) {
	c, err := a.loadConfig()
	if err != nil {
		return c, err
	}
	pick := func(flag, env, file string) string {
		switch {
		case flag != "":
			return flag
		case env != "":
			return env
		}
		return file
	}
	c.APIURL = pick(a.apiURL, a.env.Getenv("WRENN_API_URL"), c.APIURL)
	c.APIKey = pick(a.apiKey, a.env.Getenv("WRENN_API_KEY"), c.APIKey)
	c.CACert = pick(a.caCert, a.env.Getenv("WRENN_CA_CERT"), c.CACert)
	if c.APIURL == "" {
		c.APIURL = wrenn.DefaultBaseURL
	}
	return c, nil
}

func (a *app) loginCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "login",
		Short: "Check an API key and save it with the API address in the config file",
		Long: `Check an API key and save it, with the API address, in
~/.config/wrenn/config.json (mode 0600). The key comes from --api-key or,
without it, a prompt on standard input. WRENN_API_KEY and WRENN_API_URL
override the file; --api-key and --api-url override both. --ca-cert
(or WRENN_CA_CERT), the CA of a control plane serving HTTPS with a
certificate no system root trusts, is saved too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.settings()
			if err != nil {
				return err
			}
			key := a.apiKey
			if key == "" {
				if key, err = a.promptKey(); err != nil {
					return err
				}
			}
			if key == "" {
				return errors.New("no API key given")
			}
			hc, err := httpClient(s)
			if err != nil {
				return err
			}
			c, err := wrenn.NewClient(wrenn.WithEnv(func(string) string { return "" }), wrenn.WithBaseURL(s.APIURL), wrenn.WithAPIKey(key), wrenn.WithHTTPClient(hc))
			if err != nil {
				return err
			}
			me, err := c.Me(cmd.Context())
			if err != nil {
				return err
			}
			caCert := s.CACert
			if caCert != "" {
				// The file is read on every run; a relative path would
				// break when run from elsewhere.
				if caCert, err = filepath.Abs(caCert); err != nil {
					return err
				}
			}
			p, err := a.saveConfig(fileConfig{APIURL: s.APIURL, APIKey: key, CACert: caCert})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.env.Stdout, "Logged in to %s as team %s; saved %s\n", s.APIURL, me.Team.Name, p)
			return nil
		},
	}
}

// promptKey reads the key from stdin, without echo on a terminal.
func (a *app) promptKey() (string, error) {
	fmt.Fprint(a.env.Stderr, "API key: ")
	if fd, ok := terminalFd(a.env.Stdin); ok {
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(a.env.Stderr)
		if err != nil {
			return "", fmt.Errorf("read API key: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	line, err := bufio.NewReader(a.env.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("read API key: %w", err)
	}
	return strings.TrimSpace(line), nil
}
