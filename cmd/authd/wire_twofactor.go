package main

import (
	"github.com/authd/authd/commands"
	"github.com/authd/authd/config"
)

func twoFactorConfig(cfg config.Config) (commands.TwoFactorConfig, error) {
	return commands.TwoFactorConfig{}, nil
}
