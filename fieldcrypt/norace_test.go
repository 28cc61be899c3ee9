//go:build !race

package fieldcrypt

const raceEnabled = false
