// Package ui holds the status page's browser test (ui_test.go, build tag
// ui: it needs Debian's /usr/bin/chromium). Run it with `make test-ui`,
// which installs Chromium when it is missing.
package ui
