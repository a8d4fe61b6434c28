package main

import (
	"github.com/authd/authd/commands"
	"github.com/authd/authd/config"
)

func passkeyConfig(cfg config.Config) (commands.PasskeyConfig, error) {
	return commands.PasskeyConfig{}, nil
}
