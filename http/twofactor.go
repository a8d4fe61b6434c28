package http

import "github.com/gofiber/fiber/v2"

func (a *Accounts) twoFactorRoutes(r fiber.Router) {}
