package netplan

import (
	_ "embed"
	"encoding/json"
	"strings"
)

//go:embed data/geography.json
var geographyJSON []byte

// Geography maps regions and peering locations to geopolitical areas. It is
// a versioned data file (data/geography.json), embedded.
type Geography struct {
	Version string `json:"version"`
	Areas   []struct {
		Name      string   `json:"name"`
		Regions   []string `json:"regions"`
		Locations []struct {
			Name         string   `json:"name"`
			LocalRegions []string `json:"localRegions"`
		} `json:"locations"`
	} `json:"areas"`
}

// LoadGeography decodes the embedded geography file.
func LoadGeography() *Geography {
	var g Geography
	if err := json.Unmarshal(geographyJSON, &g); err != nil {
		panic("netplan: embedded geography.json is broken: " + err.Error())
	}
	return &g
}

// RegionArea returns the area of a region, or "" when unknown.
func (g *Geography) RegionArea(region string) string {
	for _, a := range g.Areas {
		for _, r := range a.Regions {
			if strings.EqualFold(r, region) {
				return a.Name
			}
		}
	}
	return ""
}

// LocationArea returns the area of a peering location, or "" when unknown.
func (g *Geography) LocationArea(loc string) string {
	for _, a := range g.Areas {
		for _, l := range a.Locations {
			if strings.EqualFold(l.Name, loc) {
				return a.Name
			}
		}
	}
	return ""
}

// LocalRegions returns the regions a Local circuit at loc reaches.
func (g *Geography) LocalRegions(loc string) []string {
	for _, a := range g.Areas {
		for _, l := range a.Locations {
			if strings.EqualFold(l.Name, loc) {
				return l.LocalRegions
			}
		}
	}
	return nil
}

// SamePlace reports whether two peering locations are one place: equal, or
// one the other with a trailing digit ("Hong Kong" and "Hong Kong2" are two
// facilities of one metro, not geo-redundant).
func SamePlace(a, b string) bool {
	trim := func(s string) string { return strings.TrimRight(strings.ToLower(strings.TrimSpace(s)), "0123456789") }
	return trim(a) == trim(b)
}
