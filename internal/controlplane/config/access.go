package config

import (
	"errors"
	"strconv"
	"strings"
)

// Who may sign up (WRENN_SIGNUP).
const (
	SignupOpen   = "open"
	SignupInvite = "invite"
	SignupClosed = "closed"
	// DefaultSignup: wrenn-cp listens on every interface by default, so
	// nobody may make an account unless the operator opens signup.
	DefaultSignup = SignupClosed
)

// accessSettings are who may sign up and which host addresses tenants may
// make the control plane dial.
func accessSettings() []setting {
	return []setting{
		{env: "WRENN_SIGNUP", flag: "signup", def: DefaultSignup,
			help: "who may sign up: open (anyone who reaches the API), invite (only with a team's invitation) or closed (accounts from `wrenn-cp admin` only)",
			set: func(c *Config, v string) error {
				switch m := strings.ToLower(strings.TrimSpace(v)); m {
				case SignupOpen, SignupInvite, SignupClosed:
					c.Signup = m
					return nil
				}
				return errors.New("want open, invite or closed")
			}},
		{env: "WRENN_ALLOW_PRIVATE_HOST_ADDRESSES", flag: "allow-private-host-addresses", def: "false",
			help: "let byoc hosts register and be dialled at loopback, private or link-local addresses (only for stacks whose tenants are trusted, e.g. agents on loopback)",
			set: func(c *Config, v string) error {
				b, err := strconv.ParseBool(strings.TrimSpace(v))
				if err != nil {
					return errors.New("want true or false")
				}
				c.AllowPrivateHostAddresses = b
				return nil
			}},
	}
}

func (c Config) accessValues() map[string]string {
	return map[string]string{
		"WRENN_SIGNUP":                       c.Signup,
		"WRENN_ALLOW_PRIVATE_HOST_ADDRESSES": strconv.FormatBool(c.AllowPrivateHostAddresses),
	}
}
