package main

import (
	"github.com/authd/authd/commands"
	"github.com/authd/authd/config"
)

func googleConfig(cfg config.Config) (commands.GoogleConfig, error) {
	return commands.GoogleConfig{}, nil
}
