"""Convert a CFF OpenType font to TrueType outlines (ReportLab reads only glyf), keeping only `ranges`."""
import sys
from fontTools.ttLib import TTFont, newTable
from fontTools.pens.cu2quPen import Cu2QuPen
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools import subset

src, dst, ranges = sys.argv[1], sys.argv[2], sys.argv[3]
unicodes = []
for part in ranges.split(","):
    a, _, b = part.partition("-")
    unicodes += list(range(int(a, 16), int(b or a, 16) + 1))
opts = subset.Options(); opts.name_IDs = ["*"]; opts.notdef_outline = True; opts.layout_features = []
opts.drop_tables += ["GSUB", "GPOS", "GDEF"]
font = TTFont(src)
sub = subset.Subsetter(opts); sub.populate(unicodes=unicodes); sub.subset(font)
order = font.getGlyphOrder(); gs = font.getGlyphSet()
glyf = {}
for name in order:
    pen = TTGlyphPen(gs); gs[name].draw(Cu2QuPen(pen, 1.0, reverse_direction=True)); glyf[name] = pen.glyph()
font["loca"] = newTable("loca"); font["glyf"] = g = newTable("glyf"); g.glyphOrder = order; g.glyphs = glyf
del font["CFF "]
if "VORG" in font: del font["VORG"]
font["maxp"] = m = newTable("maxp"); m.tableVersion = 0x00010000
for attr in ("maxZones", "maxTwilightPoints", "maxStorage", "maxFunctionDefs", "maxInstructionDefs",
             "maxStackElements", "maxSizeOfInstructions", "maxComponentElements"):
    setattr(m, attr, 0)
m.maxZones = 1
font["head"].glyphDataFormat = 0; font["post"].formatType = 2.0; font["post"].extraNames = []; font["post"].mapping = {}
font.sfntVersion = "\x00\x01\x00\x00"
font.recalcBBoxes = True
font.save(dst)
print(dst, len(order))
